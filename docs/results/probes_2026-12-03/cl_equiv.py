"""Does channels_last change a student's forward/backward beyond rounding? (same weights, same batch)
usage: python cl_equiv.py RUN_DIR"""
import copy, sys, torch
from amalgam.api import load_student

torch.manual_seed(0)
a = load_student(sys.argv[1] + "/student.pt")
a = a[0] if isinstance(a, tuple) else a
a.train()
b = copy.deepcopy(a).to(memory_format=torch.channels_last)
x = torch.rand(32, 3, 64, 64)
def run(m, x):
    out = m(x)
    loss = sum((v.float() ** 2).mean() for v in out.values())
    m.zero_grad(); loss.backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
oa, ga = run(a, x)
ob, gb = run(b, x.contiguous(memory_format=torch.channels_last))
for k in oa:
    print("out", k, f"{((oa[k]-ob[k]).abs().max() / oa[k].abs().max()).item():.2e}")
worst = max(((ga[n]-gb[n]).norm() / (ga[n].norm() + 1e-12)).item() for n in ga)
print("grad: worst relative difference over", len(ga), "tensors:", f"{worst:.2e}")
bn = [(n, ((ga[n]-gb[n]).norm() / (ga[n].norm()+1e-12)).item()) for n in ga]
bn.sort(key=lambda t: -t[1]); print(bn[:5])
n = bn[0][0]
print(n, "contiguous grad norm", ga[n].norm().item(), "cl grad norm", gb[n].norm().item())
print(ga[n][:8]); print(gb[n][:8])
tot = torch.cat([g.flatten() for g in ga.values()]).norm().item()
print("all-grad norm", tot, "diff norm", torch.cat([(ga[k]-gb[k]).flatten() for k in ga]).norm().item())
