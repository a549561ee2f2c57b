"""Task-level library functions the CLI calls (one module per task, e.g. :mod:`afxcli.tasks.export`)."""
