"""How the engine's inner loops are compiled (Numba), in one place.

- nogil: the loop runs beside the HTTP side's Python, not under its lock.
- cache: compiled once per machine, into __pycache__, not at every start.
- no reference counting (_nrt=False): the loops only index arrays that the
  caller owns and never allocate, and Numba's counting cannot be proven away
  in loops this branchy; it cost two atomic operations per array per helper
  call, which was 70% of the engine's time.
- NumPy's error model: integer division by a constant needs no Python error path.
- `inline` merges a small helper into its caller before type inference;
  `helper` compiles a bigger one on its own.
"""

from numba import njit

kernel = njit(nogil=True, cache=True, _nrt=False, error_model="numpy")
inline = njit(inline="always", _nrt=False, error_model="numpy")
# a function called from kernels but compiled on its own (LLVM still inlines
# it where that pays): Numba-level inlining of big helpers made the first
# compile take minutes
helper = njit(cache=True, _nrt=False, error_model="numpy")
