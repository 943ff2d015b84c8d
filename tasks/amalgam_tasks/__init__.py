"""amalgam's built-in task plugins (installed as ``amalgam_tasks``)."""
