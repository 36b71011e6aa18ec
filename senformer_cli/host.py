"""Facts about this machine from Linux's /proc files, for reports and notices. Each is None where
the file or the field is missing (another OS, a sandbox)."""
from __future__ import annotations

from pathlib import Path


def proc_field(key: str, path: str = "/proc/cpuinfo", text: str | None = None) -> str | None:
    """The value of the first `key: value` line of a /proc file (or of `text`), else None."""
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError:
            return None
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cpu_model() -> str | None:
    return proc_field("model name")


def cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    value = proc_field("flags", text=cpuinfo)
    return None if value is None else value.split()


def memory_total_bytes() -> int | None:
    value = proc_field("MemTotal", "/proc/meminfo")  # "24576000 kB"
    return None if value is None else int(value.split()[0]) * 1024
