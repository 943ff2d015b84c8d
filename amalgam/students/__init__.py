"""Students: encoders and their stage splitters, decoders, branched and compact students, student.pt."""

from amalgam.students.build import STUDENTS, StudentSpec, build_student, default_student_tap

__all__ = ["STUDENTS", "StudentSpec", "build_student", "default_student_tap"]
