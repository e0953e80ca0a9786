"""Pure-Python CPU work, shared by the app's `burn` activity and bench/w7_cpu.py's calibration
(which times it in its own process to find the iterations that take ~2 s)."""


def spin(iterations: int) -> int:
    value = 0
    for i in range(iterations):
        value = (value * 31 + i) % 1_000_003
    return value
