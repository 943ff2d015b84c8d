# amalgam: `make demo` sets everything up and runs the quickstart; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_DEB := /usr/share/datasets/fashion-mnist

.PHONY: env data zoo demo test wheel-check bench-data bench-zoo bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

env: $(VENV)/.installed

# Fashion-MNIST: the Debian package when we can install it, else torchvision downloads it.
data: env
	@if [ ! -d $(FASHION_DEB) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || true; fi
	$(PY) tools/get_data.py --root data/fashion
	@if ! grep -qs "fashion-scenes 2" data/scenes/val/world.txt; then \
		$(PY) tools/make_scenes.py --fashion-root data/fashion --out data/scenes --train 8000 --val 1000 --size 64 --seed 0; \
	else echo "scenes: already in data/scenes"; fi

# The quickstart teachers and the students' pretrained encoders ship in zoo_weights/ (9.6 MB): each
# file that matches zoo_weights/MANIFEST is copied into zoo/quickstart where absent (a file already
# there is kept); any still missing is trained from the ground truth, each on one thread (about an
# hour and a half for all; --force retrains).
zoo: data
	-@$(PY) tools/zoo_manifest.py --install zoo_weights zoo
	OMP_NUM_THREADS=1 $(PY) tools/train_teacher.py recipes/zoo/quickstart.yaml --all

demo: zoo
	$(VENV)/bin/amalgam build recipes/quickstart.yaml --force

# The full benchmark (docs/benchmarks.md): its teachers' own training scenes (seed 1, never the
# student's), its zoo (about an hour on two cores; an existing teacher is kept), then the build.
bench-data: data
	@if ! grep -qs "fashion-scenes 2" data/scenes_teachers/train/world.txt; then \
		$(PY) tools/make_scenes.py --fashion-root data/fashion --out data/scenes_teachers --train 24000 --val 0 --size 64 --seed 1; \
	else echo "teacher scenes: already in data/scenes_teachers"; fi

bench-zoo: bench-data
	OMP_NUM_THREADS=1 $(PY) tools/train_teacher.py recipes/zoo/fashion_scenes.yaml --all

bench: bench-zoo
	$(VENV)/bin/amalgam build recipes/fashion_scenes.yaml

test: env
	$(PY) -m pytest -q

# CI: build the wheel, install it (not editable) in a clean venv, run `amalgam tasks` and a tiny build.
wheel-check: env
	$(PY) tools/check_wheel.py

lint: env
	$(VENV)/bin/ruff check amalgam tasks tools tests recipes examples
	$(VENV)/bin/ruff format --check amalgam tasks tools tests recipes examples

clean:
	rm -rf runs
