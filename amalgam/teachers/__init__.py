"""Teachers: model sources, checkpoint loading, the frozen teacher with its input spec, sub-teachers."""

from amalgam.teachers.checks import check_teacher_output
from amalgam.teachers.taps import FeatureTap
from amalgam.teachers.teacher import Teacher, build_teacher, build_teachers, to_input

__all__ = ["FeatureTap", "Teacher", "build_teacher", "build_teachers", "check_teacher_output", "to_input"]
