"""avatar.io.memory.peak_rss_mb reads a child's own peak, not the peak it inherits from its parent."""
import subprocess
import sys

from avatar.io.memory import peak_rss_mb


def test_child_peak_excludes_the_parents_memory():
    big = bytearray(400 * 2 ** 20)
    big[::4096] = b"\x01" * len(big[::4096])            # touch every page: +400 MiB resident here
    assert peak_rss_mb() > 400
    code = "from avatar.io.memory import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
    del big
    assert 5 < child < 200, child                       # a bare interpreter plus one small module: tens of MiB


def test_peak_grows_with_an_allocation():
    code = ("from avatar.io.memory import peak_rss_mb\n"
            "a = peak_rss_mb(); b = bytearray(100 * 2 ** 20); b[::4096] = b'\\x01' * len(b[::4096])\n"
            "print(peak_rss_mb() - a)")
    grown = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)
    assert 90 < grown < 130, grown
