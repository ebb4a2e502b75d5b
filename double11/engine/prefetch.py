"""`prefetch(array, index)`: asks the CPU to start loading array[index] into
cache, from Numba-compiled code (LLVM's llvm.prefetch intrinsic).

The engine's batch loop is latency-bound: each command touches a few rows
scattered over gigabytes (its idempotency slot, its buyer, its SKUs), and the
loop's branches keep the CPU from running ahead to the next command's loads
on its own.  Prefetching the rows of the command a few places ahead overlaps
those cache misses instead of paying them one after another.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_READ, _KEEP_IN_ALL_CACHES, _DATA = 0, 3, 1


@intrinsic
def prefetch(typingctx, array, index):
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, ary, [args[1]])
        byte_pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, _I32, _I32, _I32])
        function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0")
        builder.call(function, [builder.bitcast(pointer, byte_pointer), _I32(_READ), _I32(_KEEP_IN_ALL_CACHES),
                                _I32(_DATA)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
