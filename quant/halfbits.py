"""bf16 to f16 on the raw 16-bit patterns, without widening to float32.

numpy has no bfloat16, and its float32 -> float16 cast costs about 5 ns an element here: the whole
cost of a bf16 -> f16 export. For every bf16 value whose exponent f16 can hold as a normal number
(2^-14 <= |x| < 2^16, the bulk of any weight tensor), the f16 pattern is the bf16 one rebased: both
keep sign and exponent in front of the mantissa, f16's exponent bias is 112 less and its mantissa has
3 more bits, so `f16 = sign | ((magnitude - (112 << 7)) << 3)`, exact, no rounding. Zeros keep their
sign. The rest (f16 subnormals, overflow to infinity, inf and nan) goes through numpy's cast, element
by element only where needed, so every result is bit-identical to `float32 -> float16` (tested over
all 65,536 patterns).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_REBASE = 112 << 7  # the exponent bias difference (127 - 15), in bf16's exponent position
_SMALLEST_NORMAL = 113 << 7  # bf16 magnitude of 2^-14, f16's smallest normal
_OVERFLOW = 143 << 7  # bf16 magnitude of 2^16: above f16's largest finite value (65504)


def bf16_to_f16_bits(bits: np.ndarray[Any, Any], out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """f16 patterns (uint16) of the bf16 patterns `bits` (uint16), as numpy's float cast rounds them."""
    magnitude = bits & np.uint16(0x7FFF)
    result: np.ndarray[Any, Any] = np.subtract(
        magnitude, np.uint16(_REBASE), out=out
    )  # wraps outside the fast range: fixed below
    np.left_shift(result, np.uint16(3), out=result)
    np.bitwise_or(result, bits & np.uint16(0x8000), out=result)
    outside = (magnitude < _SMALLEST_NORMAL) | (magnitude >= _OVERFLOW)
    if outside.any():
        odd = bits[outside]
        with np.errstate(over="ignore"):  # overflow to infinity is the right answer
            result[outside] = (odd.astype(np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16)
    return result
