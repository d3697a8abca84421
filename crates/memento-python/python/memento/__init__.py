"""memento: persistent memoization of slow, pure functions.

A drop-in for ``joblib.Memory`` on memento's Rust core::

    from memento import Memory

    memory = Memory("cache_dir", verbose=0)

    @memory.cache
    def slow(x, y=2):
        ...

    slow(1, y=2)  # computed and stored in cache_dir
    slow(1, 2)    # the same call (arguments are bound as joblib binds them): read back

What differs from joblib, and why:

- Keys are computed in Rust: a canonical, type-tagged encoding of the
  arguments hashed with blake3 (dicts and sets whatever their insertion
  order, NumPy arrays by dtype, shape and contents in any memory layout,
  hashed with the GIL released; masked arrays with their mask; pandas
  objects by index, columns, dtypes and values; dataclasses and other
  objects by class and state, whatever the string-hash seed); functions
  through ``pickle`` as joblib does.
- A function's fingerprint is the tokens of its source without comments,
  formatting or decorator lines: a reformatted or commented function keeps
  its results, and so does one cached by ``f = memory.cache(f)`` instead
  of ``@memory.cache`` (joblib drops them on any change of its text).
- ``Memory(cachedir=...)``, joblib's name of ``location`` before 0.12 (the
  tutorials written for it), is accepted with a ``DeprecationWarning``.
- Results are pickles (protocol 5) stored in memento's entry format, NumPy
  arrays raw beside the pickle, 64-byte aligned: loaded arrays are
  writable views of the bytes read (no copy per array), and with
  ``mmap_mode='r'`` or ``'c'`` they are ``np.memmap``s of the entry's file,
  mapped after its checksum is verified. ``'r+'`` and ``'w+'`` are ``'c'``
  (copy on write): a stored result never changes in the store.
  ``compress`` takes joblib's values and stores with zstd or lz4 (zlib,
  gzip, bz2, lzma and xz are zstd at that level); compressed results are
  loaded, not mapped, as joblib does. An entry is one
  checksummed file per result, published atomically (a killed writer never
  leaves a damaged result), computed once when several processes need the
  same new result at the same time, limits enforced after writes
  (``bytes_limit``, ``items_limit``, ``age_limit``), and with
  ``signing_key`` (or ``MEMENTO_KEY``) entries that another writer put in
  the folder are refused. The ``memento`` command lists and manages the
  folder.
- ``location`` is the cache folder itself (joblib adds a ``joblib``
  subfolder).
- memento's warnings during a call (a damaged result removed and
  computed again, a function whose code changed, a full disk) are
  ``UserWarning``s, shown at the line that called the cached function.

As with joblib, a stored result is a pickle, which runs code when it is
loaded: only use cache folders that you and people you trust write, or set
a signing key.

``Memory``, cached functions and ``call_and_shelve`` handles pickle (to
send them to worker processes): a ``Memory`` as its options, its folder
by its absolute path, and the ``signing_key`` when one was given (else the
loading process's ``MEMENTO_KEY``: a pickle of a ``Memory`` made with a key
holds the key, as one made with credentials in ``backend_options`` holds
them); a cached function by ``memory.cache(func)`` again, the
function by reference, as pickle sends functions (one decorated in a
module by its name there). ``call_and_shelve``
does not unpickle a stored result (its ``get()`` does). A
``functools.partial`` is cached as its function and the arguments it
binds, and two partials of one function keep apart.

``cache_validation_callback`` (``expires_after(...)`` makes one) is
called with a stored result's metadata (``duration``, ``input_args``,
``time``) before it is used; when it returns false the result is computed
again and stored over the old one.

A bucket: ``Memory("s3://bucket/prefix", backend_options={...})`` keeps
results in S3 (or a server that speaks its API), with a near cache on this
machine in front of it (by default ``~/.cache/memento/<bucket>/<prefix>``)
and compute-once across machines by leases in the bucket. Settings come
from the standard ``AWS_*`` environment unless ``backend_options`` gives
them, under boto3's names: ``endpoint_url``, ``region_name``,
``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``;
and ``allow_http`` (``True`` for an ``http://`` endpoint), ``near_cache``
(a folder, or ``None`` for none), ``near_cache_limit`` (bytes or a size
such as ``"10G"``), ``lease_ttl`` (seconds). A bucket that cannot be
reached is a warning, and calls still compute. S3 support is a build
option (cargo feature ``s3``; ``memento._memento.S3`` tells whether this
build has it): ``MATURIN_PEP517_ARGS="--features s3" pip install
./crates/memento-python``.
"""

import ast
import datetime
import functools
import importlib.util
import inspect
import io
import os
import pathlib
import pickle
import re
import struct
import sys
import textwrap
import time
import tokenize
import warnings

from . import _memento
from ._memento import hash_args

__all__ = [
    "Memory",
    "MemorizedFunc",
    "NotMemorizedFunc",
    "MemorizedResult",
    "NotMemorizedResult",
    "expires_after",
    "hash",
]

#: Pickle protocol of stored results.
PICKLE_PROTOCOL = 5


def hash(obj):
    """The hex digest memento keys ``obj`` by (equal values, equal digests)."""
    return _memento.hash_value(obj).hex()


def expires_after(days=0, seconds=0, microseconds=0, milliseconds=0, minutes=0, hours=0, weeks=0):
    """A ``cache_validation_callback`` that accepts results computed less
    than this long ago (the arguments of ``datetime.timedelta``), as
    joblib's::

        @memory.cache(cache_validation_callback=expires_after(hours=1))
        def fetch(url): ...
    """
    delta = datetime.timedelta(
        days=days,
        seconds=seconds,
        microseconds=microseconds,
        milliseconds=milliseconds,
        minutes=minutes,
        hours=hours,
        weeks=weeks,
    )

    def cache_validation_callback(metadata):
        computation_age = time.time() - metadata["time"]
        return computation_age < delta.total_seconds()

    return cache_validation_callback


# --- the function's identity and fingerprint ---------------------------------

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
# Kept as markers, without their text: a block's structure is code (which
# statement is inside an `if`), the width of its indentation is formatting.
_MARKERS = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def _normal_string(text):
    """A string literal as its value, so that 'a' and "a" are one token."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, (str, bytes)):
        return "S" + repr(value)
    return text


def _source_material(source, decorators=True):
    """The tokens of ``source``; without its leading decorator lines when
    ``decorators`` is false."""
    readline = io.StringIO(textwrap.dedent(source)).readline
    tokens = ((t.type, t.string, t.start[0]) for t in tokenize.generate_tokens(readline))
    return _material_of(tokens, decorators)


def _material_of(tokens, decorators):
    """The fingerprint material of ``(type, string, row)`` tokens."""
    parts = [b"memento python source tokens v1"]
    # Before the `def`: at the start of a logical line, in a decorator line.
    header, line_start, in_decorator = not decorators, True, False
    for kind, string, _ in tokens:
        if kind in _SKIPPED:
            continue
        if header:
            if line_start and kind == tokenize.OP and string == "@":
                in_decorator = True
            elif line_start and not in_decorator:
                header = False
            line_start = kind == tokenize.NEWLINE
            if in_decorator:
                in_decorator = not line_start
                continue
        if kind in _MARKERS:
            parts.append(tokenize.tok_name[kind].encode())
            continue
        text = _normal_string(string) if kind == tokenize.STRING else string
        parts.append(text.encode("utf-8", "surrogatepass"))
    return b"\0".join(parts)


def _code_material(code):
    """The fingerprint material of a code object, for functions without
    source (built by exec of a string, or in a frozen program)."""
    parts = [b"memento python code v1", code.co_code]
    for const in code.co_consts:
        if inspect.iscode(const):
            parts.append(_code_material(const))
        else:
            parts.append(repr(const).encode("utf-8", "surrogatepass"))
    parts.append(repr(code.co_names).encode())
    parts.append(repr(code.co_varnames).encode())
    return b"\0".join(parts)


# --- the same tokens without tokenize's regular expressions (Python 3.11) ----
#
# On Python 3.11, `tokenize` is pure Python: its first use compiles large
# regular expressions (a few milliseconds, most of a fresh process's first
# call; `inspect.getsource` uses it too, to find where a function ends).
# 3.11 also has CPython's own tokenizer (`_tokenize.TokenizerIter`, what
# 3.12's `tokenize` is built on): the same tokens, without comments and
# blank lines (which the fingerprint skips anyway), operators typed
# exactly (`@` is AT where `tokenize` says OP). `_fast_material` finds the
# function's lines as `inspect.getsource` does (`inspect.findsource`, then
# `inspect.BlockFinder` fed these tokens) and reads its tokens from them;
# the material is the same as `_source_material(inspect.getsource(func))`
# (tests/test_hashing.py compares both over the standard library). Anything
# it does not handle (an error of the tokenizer, a block that does not end)
# falls back to `tokenize`. 3.9 and 3.10 lack the C tokenizer's iterator;
# from 3.12 `tokenize` is already the C tokenizer.

try:
    if sys.version_info[:2] != (3, 11):
        raise ImportError
    from _tokenize import TokenizerIter as _TokenizerIter
except ImportError:
    _TokenizerIter = None

_EXACT = frozenset(tokenize.EXACT_TOKEN_TYPES.values())


class _NoFastPath(Exception):
    """The C tokenizer's way does not apply: use tokenize."""


def _c_tokens(source):
    """``(type, string, row)`` of ``source`` by the C tokenizer, operators
    as ``OP`` (as ``tokenize`` types them)."""
    op = tokenize.OP
    for string, kind, row, _, _, _, _ in _TokenizerIter(source):
        yield (op if kind in _EXACT else kind), string, row


def _c_block(lines):
    """``inspect.getblock(lines)`` with the C tokenizer: the lines of the
    block at the top. ``BlockFinder`` is fed the tokens that matter to it
    (comments and blank lines only matter to it to take trailing comments
    in, which the fingerprint skips)."""
    finder = inspect.BlockFinder()
    # INDENT's column is only used for comments: never fed here.
    try:
        for kind, string, row in _c_tokens("".join(lines)):
            finder.tokeneater(kind, string, (row, 0), (row, 0), "")
    except inspect.EndOfBlock:
        return lines[: finder.last]
    except Exception as e:  # noqa: BLE001 - tokenize decides what it means
        raise _NoFastPath from e
    raise _NoFastPath  # no end found: as tokenize would see it


def _fast_material(func, decorators):
    """``_source_material(inspect.getsource(func), decorators)`` without
    ``tokenize``; ``_NoFastPath`` when it cannot tell."""
    if _TokenizerIter is None:
        raise _NoFastPath
    target = inspect.unwrap(func)
    if inspect.ismodule(target) or inspect.istraceback(target):
        raise _NoFastPath
    try:
        lines, lnum = inspect.findsource(target)
    except (OSError, TypeError) as e:
        raise _NoFastPath from e
    source = "".join(_c_block(lines[lnum:]))
    try:
        return _material_of(_c_tokens(textwrap.dedent(source)), decorators)
    except Exception as e:  # noqa: BLE001 - tokenize decides what it means
        raise _NoFastPath from e


def _fingerprint(func):
    """What identifies the function's code: its source's tokens, without
    comments and formatting; its code object where there is no source.

    The decorator lines above the ``def`` are left out when ``func`` is the
    function they decorate (it has no ``__wrapped__``): they were applied
    after it, or returned it as it was, so they are not its code; and
    ``@memory.cache`` above a ``def`` and ``f = memory.cache(f)`` below it
    are then the same function with the same results. When ``func`` wraps
    another (``functools.wraps``), its source is the wrapped function's,
    decorators included: a wrapper that changes keeps its lines in the
    fingerprint.

    A ``functools.partial`` is the function it calls and the arguments it
    binds (``partial(f, 1)`` and ``partial(f, 2)`` keep apart). A lambda's
    source is its whole line, which two lambdas can share: its code object
    is added, so that they keep apart."""
    if isinstance(func, functools.partial):
        bound = _memento.hash_value((func.args, func.keywords))
        return b"\0".join([b"memento python partial v1", _fingerprint(func.func), bound])
    decorators = hasattr(func, "__wrapped__")
    try:
        material = _fast_material(func, decorators)
    except _NoFastPath:
        return _slow_fingerprint(func, decorators)
    if getattr(func, "__name__", None) == "<lambda>" and hasattr(func, "__code__"):
        material += b"\0" + _code_material(func.__code__)
    return material


def _slow_fingerprint(func, decorators):
    """``_fingerprint`` through ``inspect.getsource`` and ``tokenize``."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = None
    if source is not None:
        try:
            material = _source_material(source, decorators=decorators)
            if getattr(func, "__name__", None) == "<lambda>" and hasattr(func, "__code__"):
                material += b"\0" + _code_material(func.__code__)
            return material
        except (tokenize.TokenError, SyntaxError):
            pass
    code = getattr(func, "__code__", None)
    if code is None:
        # A callable object: its class's __call__.
        code = getattr(getattr(type(func), "__call__", None), "__code__", None)
    if code is None:
        raise TypeError(
            f"memento cannot fingerprint {func!r}: it has neither source nor a code "
            "object; cache a Python function (def or lambda) that calls it"
        )
    return _code_material(code)


def _qualname(func):
    """The function's qualified name. A ``functools.partial``'s is its
    function's and the digest of the arguments it binds: two partials of one
    function are two functions, which keep each other's results."""
    if isinstance(func, functools.partial):
        bound = _memento.hash_value((func.args, func.keywords)).hex()[:16]
        return f"{_qualname(func.func)}.partial-{bound}"
    return getattr(func, "__qualname__", None) or type(func).__qualname__


def _module_name(func):
    while isinstance(func, functools.partial):
        func = func.func
    module = getattr(func, "__module__", None) or "__unknown__"
    if module in ("__main__", "__mp_main__"):
        # A script: its file's name, so that two scripts keep apart (and a
        # spawned worker, whose copy of the script is __mp_main__, finds the
        # parent's results).
        main = sys.modules.get(module)
        path = getattr(main, "__file__", None)
        if path:
            return "__main__." + pathlib.Path(path).stem
    return module


def _parse_bytes(value, what):
    """An int, or a size such as '10G', '500M', '3K' (powers of 1024, as
    joblib reads them)."""
    if value is None or isinstance(value, int):
        if value is not None and value < 0:
            raise ValueError(f"{what} must be 0 or more: got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(
            f"{what} must be a number of bytes or a size such as '10G', '500M': got {value!r}"
        )
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(match.group(1)) * scale[match.group(2).upper()])


def _seconds(value, what):
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    value = float(value)
    if value < 0:
        raise ValueError(f"{what} must be 0 or more: got {value}")
    return value


def _short_repr(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NotStored(Exception):
    """Raised instead of computing, by a look that must not compute."""


class _Unpicklable(Exception):
    """The result could not be pickled: returned, not stored."""

    def __init__(self, value, error):
        super().__init__(str(error))
        self.value = value
        self.error = error


# --- results ------------------------------------------------------------------
#
# A result is stored as its pickle (protocol 5). Its out-of-band buffers
# (NumPy arrays: their raw bytes, not copied into the pickle) make it the
# MPYR layout, version 1 (docs/ARCHITECTURE.md), all integers little-endian:
#
#   0   4       magic b"MPYR"
#   4   2       layout version (1)
#   6   2       zero
#   8   8       P: the pickle's length
#   16  8       N: the number of buffers
#   24  16 * N  per buffer: its offset from the payload's start (a multiple
#               of 64), its length
#   then        the pickle (P bytes); each buffer at its offset, zeros between
#
# A result without out-of-band buffers is the bare pickle (it starts with
# the PROTO opcode 0x80, never with the magic), as every result stored
# before this layout is. The payload starts at a file offset that is a
# multiple of 64 (memento's plain-buffer entry), so the buffers are aligned
# in the file too: mmap_mode maps them from it.

_MAGIC = b"MPYR"
_LAYOUT_VERSION = 1
_ALIGN = 64
_HEAD = struct.Struct("<4sHHQQ")
_SLOT = struct.Struct("<QQ")
_FROMBUFFER = {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}


def _align(n):
    return -(-n // _ALIGN) * _ALIGN


class _Pickler(pickle.Pickler):
    """Protocol 5 with NumPy arrays as out-of-band buffers: non-contiguous
    arrays and ``np.memmap`` results as their contiguous ndarray copy or
    view (joblib stores those too), read-only arrays as a writable copy, so
    that they are stored raw and load as writable views of the stored
    bytes; arrays of objects stay in the pickle."""

    def reducer_override(self, obj):
        np = sys.modules.get("numpy")
        if np is None:
            return NotImplemented
        kind = type(obj)
        if (kind is not np.ndarray and kind is not np.memmap) or obj.dtype.hasobject:
            return NotImplemented  # other subclasses pickle as they do
        contiguous = obj.flags.c_contiguous or obj.flags.f_contiguous
        if kind is np.ndarray and contiguous and obj.flags.writeable:
            return NotImplemented  # out of band already
        if not obj.flags.writeable:
            # Pickle would mark its buffer read-only, and the arrays loaded
            # would be: a writable copy, so that they load writable, as
            # joblib's do.
            plain = np.array(obj, order="K")
        elif contiguous:
            plain = obj.view(np.ndarray)
        else:
            plain = np.ascontiguousarray(obj)
        return plain.__reduce_ex__(PICKLE_PROTOCOL)


def _encode(value):
    """The payload of ``value``: the bare pickle (bytes), or the parts of
    the MPYR layout (a list: the head, then each buffer, which
    ``_memento`` lays out at the next multiple of 64 after the previous
    part, as the table says)."""
    buffers = []
    out = io.BytesIO()
    _Pickler(out, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append).dump(value)
    data = out.getbuffer()
    if not buffers:
        return bytes(data)
    raws = [b.raw() for b in buffers]
    head_len = _HEAD.size + _SLOT.size * len(raws) + len(data)
    table = []
    at = _align(head_len)
    for raw in raws:
        table.append(_SLOT.pack(at, raw.nbytes))
        at = _align(at + raw.nbytes)
    head = b"".join([_HEAD.pack(_MAGIC, _LAYOUT_VERSION, 0, len(data), len(raws)), *table, data])
    return [head, *raws]


def _view(payload):
    """A writable view of a large payload's memory, which the view keeps
    alive (a stable-ABI extension cannot export the buffer protocol for
    CPython 3.9 and 3.10, so the view is made with ctypes)."""
    import ctypes

    class _Memory(ctypes.c_char * len(payload)):
        __slots__ = ("payload",)

    memory = _Memory.from_address(payload.address)
    memory.payload = payload
    return memoryview(memory).cast("B")


def _layout(view):
    """The pickle and the buffers of an MPYR payload (views of ``view``)."""
    magic, version, _, pickle_len, count = _HEAD.unpack_from(view, 0)
    if version != _LAYOUT_VERSION:
        raise ValueError(
            f"it was stored in result layout version {version} and this memento reads "
            f"version {_LAYOUT_VERSION}: update memento, or clear the function"
        )
    start = _HEAD.size + _SLOT.size * count
    if start + pickle_len > len(view):
        raise ValueError("its layout's table is damaged")
    buffers = []
    for i in range(count):
        at, length = _SLOT.unpack_from(view, _HEAD.size + _SLOT.size * i)
        if at % _ALIGN or at + length > len(view):
            raise ValueError("its layout's table is damaged")
        buffers.append(view[at : at + length])
    return view[start : start + pickle_len], buffers


def _decode(data):
    """The value of a payload read into memory (``bytes``, ``bytearray``
    or a large ``_memento.Payload``). Arrays are views of the payload's
    memory, writable (it is this load's own)."""
    if type(data) is bytes:
        return pickle.loads(data)
    view = _view(data) if isinstance(data, _memento.Payload) else memoryview(data)
    if view[:4] != _MAGIC:
        return pickle.loads(view)
    stream, buffers = _layout(view)
    return pickle.loads(stream, buffers=buffers)


def _memmap_frombuffer(buffer, dtype, shape, order):
    """numpy's ``_frombuffer`` for a mapped load: an ``np.memmap`` of the
    entry's file, as joblib returns."""
    np = sys.modules["numpy"]
    if isinstance(buffer, memoryview) and isinstance(buffer.obj, np.memmap):
        buffer = buffer.obj  # a read-only buffer, wrapped by pickle
    if isinstance(buffer, np.memmap):
        return buffer.view(dtype).reshape(shape, order=order)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


class _MappedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _FROMBUFFER:
            return _memmap_frombuffer
        return super().find_class(module, name)


def _decode_mapped(found, mode):
    """The value of a verified entry mapped from its file: ``found`` is
    ``(fd, offset, length)`` from ``_memento``, a descriptor of the very
    file that was verified (closed here), where the payload starts in it,
    and its length."""
    import numpy as np

    fd, offset, length = found
    with open(fd, "rb", closefd=True) as f:
        region = np.memmap(f, dtype=np.uint8, mode=mode, offset=offset, shape=(length,))
    if bytes(region[:4]) != _MAGIC:
        return pickle.loads(memoryview(region))
    stream, buffers = _layout(region)
    return _MappedUnpickler(io.BytesIO(bytes(stream)), buffers=buffers).load()


def _map_mode(mmap_mode):
    """The mode arrays are mapped with: 'r' (read-only) or 'c' (copy on
    write). 'r+' and 'w+' are 'c': a stored result must never change in
    the store (it is checksummed, and shared by every later call)."""
    if mmap_mode not in (None, "r", "r+", "w+", "c"):
        raise ValueError(f"mmap_mode must be None, 'r', 'r+', 'w+' or 'c': got {mmap_mode!r}")
    return None if mmap_mode is None else ("r" if mmap_mode == "r" else "c")


_COMPRESSORS = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd")


def _compression(compress):
    """joblib's ``compress`` as memento's codec: ``None``, ``("lz4", 0)``
    or ``("zstd", level)``. memento has lz4 and zstd; the names it lacks
    (zlib, gzip, bz2, lzma, xz) are zstd at the same level."""
    accepted = (
        "compress must be False, True, a level from 0 to 9, one of "
        f"{', '.join(repr(n) for n in _COMPRESSORS)}, or (name, level) such as ('zstd', 3): "
        f"got {compress!r}"
    )
    if compress is None or compress is False:
        return None
    if compress is True:
        name, level = "zlib", 3
    elif isinstance(compress, int):
        if not 0 <= compress <= 9:
            raise ValueError(accepted)
        name, level = "zlib", compress
    elif isinstance(compress, str):
        name, level = compress, 3
    elif (
        isinstance(compress, (tuple, list))
        and len(compress) == 2
        and isinstance(compress[0], str)
        and isinstance(compress[1], int)
        and not isinstance(compress[1], bool)
    ):
        name, level = compress
    else:
        raise ValueError(accepted)
    if name not in _COMPRESSORS:
        raise ValueError(accepted)
    if level == 0:
        return None
    if name == "lz4":
        return ("lz4", 0)
    if not 1 <= level <= (22 if name == "zstd" else 9):
        raise ValueError(accepted)
    return ("zstd", level)


class MemorizedResult:
    """A handle on a stored result (``func.call_and_shelve(...)``): ``get()``
    reads it, ``clear()`` removes it."""

    def __init__(self, stored, func_name, mapped=None, origin=None):
        self._stored = stored
        self.func = func_name
        # (load, map mode) with mmap_mode: get() maps as a call does.
        self._mapped = mapped
        # (Memory, the Function's arguments, digest, map mode): what a
        # pickled handle is made again from, in another process too.
        self._origin = origin

    def __reduce__(self):
        if self._origin is None:
            raise TypeError(
                "this MemorizedResult was not made by a Memory's cached function and cannot "
                "be pickled: pickle the one call_and_shelve returns"
            )
        return (_shelved, self._origin)

    def get(self):
        """The stored value, verified and unpickled (mapped with the
        function's ``mmap_mode``). ``KeyError`` when it is no longer
        stored."""
        if self._mapped is not None:
            load, mode = self._mapped
            return load(mode)
        return _decode(self._stored.get())

    def clear(self):
        """Removes the stored result (nothing happens if it is gone)."""
        try:
            self._stored.clear()
        except KeyError:
            pass

    def metadata(self):
        """The entry's metadata: function, key, time, duration, size."""
        return self._stored.metadata()

    @property
    def key(self):
        return self._stored.key

    def __repr__(self):
        return f"MemorizedResult(func={self.func!r}, key={self.key!r})"


def _shelved(owner, function_args, digest, mode, function=None):
    """The handle on a stored result: what a pickled ``MemorizedResult``
    is made again from (``function``: the ``_memento.Function`` already
    made from ``function_args``, if any)."""
    if function is None:
        *args, compress = function_args
        function = _memento.Function(*args, compress=compress)
    memory = owner._memory
    mapped = None
    if mode is not None:
        mapped = (functools.partial(_load_mapped, memory, function, digest), mode)
    origin = (owner, function_args, digest, mode)
    return MemorizedResult(memory.shelve(function, digest), function.full_name, mapped, origin)


def _load_mapped(memory, function, digest, mode):
    """The stored result mapped with ``mode``. Computes nothing:
    ``KeyError`` when it is not stored."""

    def not_stored():
        raise _NotStored

    try:
        data, _ = memory.call(function, digest, not_stored, False, True)
    except _NotStored:
        raise KeyError(f"no result of {function.full_name} is stored for these arguments") from None
    if type(data) is tuple:
        return _decode_mapped(data, mode)
    return _decode(data)


class NotMemorizedResult:
    """The value of a call with caching disabled, behind the same interface."""

    def __init__(self, value):
        self.value = value
        self.valid = True

    def get(self):
        if not self.valid:
            raise KeyError("No value stored.")
        return self.value

    def clear(self):
        self.valid = False
        self.value = None

    def __repr__(self):
        return f"NotMemorizedResult({self.value!r})" if self.valid else "NotMemorizedResult()"


# --- functions ----------------------------------------------------------------


class NotMemorizedFunc:
    """A function with caching disabled (``Memory(location=None)``): every call
    computes."""

    def __init__(self, func):
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def call_and_shelve(self, *args, **kwargs):
        return NotMemorizedResult(self.func(*args, **kwargs))

    def call(self, *args, **kwargs):
        return self.func(*args, **kwargs), {}

    def check_call_in_cache(self, *args, **kwargs):
        return False

    def clear(self, warn=True):
        pass

    def __repr__(self):
        return f"NotMemorizedFunc(func={self.func!r})"


class MemorizedFunc:
    """A cached function (what ``@memory.cache`` returns)."""

    def __init__(
        self,
        func,
        memory,
        ignore=None,
        verbose=1,
        mmap_mode=None,
        cache_validation_callback=None,
        compress=False,
        *,
        owner=None,
    ):
        self.func = func
        # The Memory that made it (None when made directly): what a pickled
        # MemorizedFunc is made again from.
        self._owner = owner
        self.cache_validation_callback = cache_validation_callback
        self._memory = memory  # _memento.Memory
        self._verbose = verbose
        self.mmap_mode = mmap_mode
        self.compress = compress
        self._compression = _compression(compress)
        # Compressed entries cannot be mapped: with compress, results are
        # loaded (as joblib does).
        self._map_mode = None if self._compression else _map_mode(mmap_mode)
        if self._map_mode is not None and importlib.util.find_spec("numpy") is None:
            warnings.warn(
                "memento: mmap_mode maps arrays with numpy, which is not installed: "
                "results are loaded into memory",
                stacklevel=3,
            )
            self._map_mode = None
        self._signature = inspect.signature(func)
        self.ignore = list(ignore or [])
        for name in self.ignore:
            if name not in self._signature.parameters:
                raise ValueError(
                    f"ignore={self.ignore!r}: {_qualname(func)} has no argument {name!r} "
                    f"(its signature is {self._signature})"
                )
        self._ignored = frozenset(self.ignore)
        self._function = None
        self._fast = self._fast_binding()
        self._code = None
        functools.update_wrapper(self, func)

    # The Rust side's Function, made at the first call (reading the source
    # costs milliseconds: not at import).
    def _rust_function(self):
        # A function whose code object was replaced at run time (joblib:
        # test_memory_in_memory_function_code_change) is fingerprinted again.
        code = getattr(self.func, "__code__", None)
        if self._function is None or code is not self._code:
            self._code = code
            name = _qualname(self.func)
            # Kept: a pickled MemorizedResult makes the same Function again.
            self._function_args = (
                _module_name(self.func),
                name,
                _fingerprint(self.func),
                f"{name}{self._signature}",
                self._compression,
            )
            *args, compress = self._function_args
            self._function = _memento.Function(*args, compress=compress)
        return self._function

    def _fast_binding(self):
        """What binds a call without ``inspect`` (a hit's largest cost), for
        signatures of plain parameters (no ``*args``, ``**kwargs`` or
        keyword-only ones): the names, how many have no default, the
        defaults, and the positions kept (``None``: all). ``None`` for other
        signatures."""
        params = list(self._signature.parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if any(p.kind not in plain for p in params):
            return None
        names = tuple(p.name for p in params)
        defaults = tuple(p.default for p in params if p.default is not p.empty)
        required = len(names) - len(defaults)
        # Python refuses a parameter without default after one with: checked
        # anyway, since a __signature__ may say anything.
        if any(p.default is not p.empty for p in params[:required]):
            return None
        positional_only = frozenset(
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        kept = None
        if self._ignored:
            kept = tuple(i for i, n in enumerate(names) if n not in self._ignored)
        return names, required, defaults, positional_only, kept

    def _bind(self, args, kwargs):
        """The call's arguments as ``(name, value)`` pairs in the order of the
        signature, defaults applied, ``ignore`` left out: as joblib binds
        them (``f(1, y=2)`` and ``f(1, 2)`` are one call)."""
        fast = self._fast
        if fast is not None:
            names, required, defaults, positional_only, kept = fast
            n = len(args)
            values = None
            if not kwargs:
                if n == len(names):
                    values = args
                elif required <= n < len(names):
                    values = args + defaults[n - required :]
            elif n <= len(names):
                # Keywords for the rest: each parameter once, none unknown,
                # none positional-only (else inspect raises joblib's error).
                rest = list(args)
                used = 0
                for i in range(n, len(names)):
                    name = names[i]
                    if name in kwargs and name not in positional_only:
                        rest.append(kwargs[name])
                        used += 1
                    elif i >= required:
                        rest.append(defaults[i - required])
                    else:
                        break
                else:
                    if used == len(kwargs):
                        values = rest
            if values is not None:
                if kept is None:
                    return list(zip(names, values))
                return [(names[i], values[i]) for i in kept]
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return [(n, v) for n, v in bound.arguments.items() if n not in self._ignored]

    @staticmethod
    def _call_metadata(meta, pairs):
        """joblib's metadata of a result: ``duration`` (seconds), ``input_args``
        (the bound arguments' reprs), ``time`` (when it was computed, Unix
        seconds)."""
        return {
            "duration": meta.get("duration"),
            "input_args": {n: _short_repr(v) for n, v in pairs},
            "time": meta.get("time"),
        }

    def _stored_is_valid(self, function, digest, pairs):
        """False when a result is stored and the validation callback refuses
        it; True otherwise (nothing stored, no callback, or accepted)."""
        callback = self.cache_validation_callback
        if callback is None:
            return True
        try:
            meta = self._memory.shelve(function, digest).metadata()
        except KeyError:
            return True
        return bool(callback(self._call_metadata(meta, pairs)))

    def _run(self, args, kwargs, force=False):
        """(value, hit, digest, function)."""
        function = self._rust_function()
        pairs = self._bind(args, kwargs)
        digest = hash_args(pairs)
        if not force and not self._stored_is_valid(function, digest, pairs):
            # Refused by the callback: computed again, stored over it.
            force = True
        computed = []

        def compute():
            if self._verbose > 0:
                shown = ", ".join(f"{n}={_short_repr(v)}" for n, v in pairs)
                print(f"[Memory] Calling {function.full_name}({shown})")
            start = time.monotonic()
            value = self.func(*args, **kwargs)
            computed.append(value)
            if self._verbose > 0:
                took = time.monotonic() - start
                print(f"[Memory] {_qualname(self.func)} - {took:.1f}s, {took / 60:.1f}min")
            try:
                payload = _encode(value)
            except Exception as e:  # noqa: BLE001 - any pickling failure
                raise _Unpicklable(value, e) from e
            computed.append(type(payload) is list)
            return payload

        mode = self._map_mode
        for _ in range(3):
            try:
                data, hit = self._memory.call(function, digest, compute, force, mode is not None)
            except _Unpicklable as e:
                warnings.warn(
                    f"memento: the result of {function.full_name} cannot be pickled "
                    f"({e.error!r}); it is returned but not cached",
                    stacklevel=3,
                )
                return e.value, False, digest, function
            if not hit:
                value, buffers = computed
                if mode is not None and buffers:
                    # As joblib: the first call returns the arrays mapped
                    # too, as every later call will (the value computed
                    # when it cannot be read back: not stored, say).
                    try:
                        value = self._load_mapped(function, digest, mode)
                    except Exception:  # noqa: BLE001 - the computed value is right too
                        pass
                return value, False, digest, function
            try:
                if type(data) is tuple:
                    return _decode_mapped(data, mode), True, digest, function
                return _decode(data), True, digest, function
            except Exception as e:  # noqa: BLE001 - any unpickling failure
                warnings.warn(
                    f"memento: the stored result of {function.full_name} cannot be loaded "
                    f"({e!r}); it is computed again",
                    stacklevel=3,
                )
                force = True
        # Three stored results in a row could not be loaded: computed here.
        computed.clear()
        self._memory.call(function, digest, compute, True, False)
        return computed[0], False, digest, function

    def _load_mapped(self, function, digest, mode):
        """The stored result mapped with ``mode``. Computes nothing:
        ``KeyError`` when it is not stored."""
        return _load_mapped(self._memory, function, digest, mode)

    def __call__(self, *args, **kwargs):
        return self._run(args, kwargs)[0]

    def call_and_shelve(self, *args, **kwargs):
        """Computes (or finds) the result and returns a handle on it instead
        of the value. A stored result is not unpickled: ``get()`` does
        that."""
        function = self._rust_function()
        pairs = self._bind(args, kwargs)
        digest = hash_args(pairs)
        if not (
            self._memory.contains(function, digest)
            and self._stored_is_valid(function, digest, pairs)
        ):
            _, _, digest, function = self._run(args, kwargs)
        if self._owner is None:
            mapped = None
            if self._map_mode is not None:
                mapped = (functools.partial(self._load_mapped, function, digest), self._map_mode)
            stored = self._memory.shelve(function, digest)
            return MemorizedResult(stored, function.full_name, mapped)
        return _shelved(self._owner, self._function_args, digest, self._map_mode, function)

    def call(self, *args, **kwargs):
        """Computes the result again, stores it over the old one, and returns
        ``(value, metadata)``."""
        value, _, digest, function = self._run(args, kwargs, force=True)
        stored = self._memory.shelve(function, digest)
        try:
            meta = stored.metadata()
        except KeyError:
            meta = {}
        return value, self._call_metadata(meta, self._bind(args, kwargs))

    def check_call_in_cache(self, *args, **kwargs):
        """Is the result of this call stored (and accepted by the validation
        callback)? Computes nothing."""
        pairs = self._bind(args, kwargs)
        digest = hash_args(pairs)
        function = self._rust_function()
        if not self._memory.contains(function, digest):
            return False
        return self._stored_is_valid(function, digest, pairs)

    def clear(self, warn=True):
        """Removes this function's stored results."""
        self._memory.clear_function(self._rust_function())

    def __reduce__(self):
        # Decorated in a module (``@memory.cache`` above a ``def``): the
        # module's name for it is this object, so it pickles by reference,
        # as the function would (the function itself cannot: its name is
        # this object's).
        qualname = getattr(self, "__qualname__", None)
        target = sys.modules.get(getattr(self, "__module__", None) or "")
        for part in (qualname or "").split("."):
            target = getattr(target, part, None)
        if qualname and target is self:
            return qualname
        if self._owner is None:
            raise TypeError(
                "this MemorizedFunc was not made by Memory.cache and cannot be pickled: "
                "pickle the one memory.cache(func) returns"
            )
        options = {
            "ignore": self.ignore,
            "verbose": self._verbose,
            "mmap_mode": self.mmap_mode,
            "cache_validation_callback": self.cache_validation_callback,
        }
        # The function is pickled by reference, as pickle does: it must be
        # importable where it is loaded.
        return (_cached, (self._owner, self.func, options))

    def __repr__(self):
        return f"MemorizedFunc(func={self.func!r}, location={self._memory.location!r})"


def _cached(owner, func, options):
    """``owner.cache(func, **options)``: what a pickled ``MemorizedFunc`` is
    made again from."""
    return owner.cache(func, **options)


# --- the cache ------------------------------------------------------------------


class Memory:
    """A cache folder, as ``joblib.Memory``.

    ``location=None`` disables caching (decorated functions always compute).
    ``bytes_limit``, ``items_limit`` and ``age_limit`` (seconds or a
    ``timedelta``) are enforced automatically after writes, least recently
    used results first. ``signing_key`` (default: the ``MEMENTO_KEY``
    environment variable) signs entries and refuses foreign ones;
    ``lock_timeout`` (seconds) bounds the wait for the same call running in
    another process (by default: until it ends or its process dies).

    ``mmap_mode='r'`` returns stored arrays as read-only ``np.memmap``s of
    their entry file (verified first; ``'c'``, ``'r+'`` and ``'w+'``: copy
    on write). ``compress`` (``True``, a level 0 to 9, ``'zstd'``,
    ``'lz4'``, ``'zlib'``... or ``(name, level)``) stores results
    compressed with zstd or lz4; compressed results are loaded, not mapped.
    """

    def __init__(
        self,
        location=None,
        backend="local",
        mmap_mode=None,
        compress=False,
        verbose=1,
        bytes_limit=None,
        backend_options=None,
        *,
        items_limit=None,
        age_limit=None,
        signing_key=None,
        lock_timeout=None,
        cachedir=None,
    ):
        if cachedir is not None:
            # joblib before 0.12 (and the tutorials written for it).
            if location is not None:
                raise ValueError(
                    "Memory(location=..., cachedir=...): give only location (cachedir is its "
                    "old name)"
                )
            warnings.warn(
                f"memento: cachedir is joblib's old name of location: use location={cachedir!r}",
                DeprecationWarning,
                stacklevel=2,
            )
            location = cachedir
        remote = location is not None and _is_bucket(location)
        if backend not in ("local", "s3"):
            raise ValueError(
                f"backend={backend!r}: memento's backends are 'local' (a folder) and 's3' (a "
                "location s3://bucket/prefix)"
            )
        if backend == "s3" and location is not None and not remote:
            raise ValueError(
                f"backend='s3' needs a location s3://bucket/prefix: got {location!r}"
            )
        _map_mode(mmap_mode)
        if _compression(compress) and mmap_mode is not None:
            warnings.warn(
                "memento: compressed results cannot be memory-mapped: with compress, "
                "mmap_mode is ignored and results are loaded (as joblib does)",
                stacklevel=2,
            )
        self.mmap_mode = mmap_mode
        self.compress = compress
        self._verbose = verbose
        self.bytes_limit = _parse_bytes(bytes_limit, "bytes_limit")
        self.items_limit = items_limit
        self.age_limit = _seconds(age_limit, "age_limit")
        self.backend_options = dict(backend_options or {})
        if location is None:
            self.location = None
            self._memory = None
            self._pickled = {"location": None, "verbose": verbose}
            return
        self.location = os.fspath(location)
        # A folder made absolute now: a later change of the current
        # directory (or a worker that runs elsewhere) does not move it.
        where = self.location if remote else os.path.abspath(self.location)
        if remote:
            self.backend_options = _bucket_options(self.backend_options)
        elif set(self.backend_options) & set(_memento.S3_OPTIONS):
            # A bucket's settings with a folder: a mistyped URL ("s3:/b")
            # would otherwise quietly become a local folder.
            raise ValueError(
                f"backend_options {sorted(self.backend_options)} are a bucket's settings, but "
                f"location {self.location!r} is a folder: a bucket's location is "
                "s3://bucket/prefix"
            )
        # What a pickled Memory is made again from: the same location, the
        # same options; a signing key only when one was given (else the
        # process's MEMENTO_KEY).
        self._pickled = {
            "location": where,
            "mmap_mode": mmap_mode,
            "compress": compress,
            "verbose": verbose,
            "bytes_limit": self.bytes_limit,
            "backend_options": self.backend_options,
            "items_limit": items_limit,
            "age_limit": self.age_limit,
            "signing_key": signing_key,
            "lock_timeout": lock_timeout,
        }
        if signing_key is None:
            signing_key = os.environ.get("MEMENTO_KEY") or None
        if isinstance(signing_key, str):
            signing_key = signing_key.encode()
        self._memory = _memento.Memory(
            where,
            bytes_limit=self.bytes_limit,
            items_limit=items_limit,
            age_limit=self.age_limit,
            signing_key=signing_key,
            lock_timeout=_seconds(lock_timeout, "lock_timeout"),
            backend_options=self.backend_options if remote else None,
        )

    def cache(
        self,
        func=None,
        ignore=None,
        verbose=None,
        mmap_mode=False,
        cache_validation_callback=None,
    ):
        """Decorates ``func`` so that its results are cached:
        ``@memory.cache`` or ``@memory.cache(ignore=["verbose"])``."""
        if cache_validation_callback is not None and not callable(cache_validation_callback):
            raise ValueError(
                "cache_validation_callback must be callable (it is given a result's metadata "
                f"and returns whether to use it): got {cache_validation_callback!r}"
            )
        if func is None:
            return functools.partial(
                self.cache,
                ignore=ignore,
                verbose=verbose,
                mmap_mode=mmap_mode,
                cache_validation_callback=cache_validation_callback,
            )
        if ignore is not None and not isinstance(ignore, (list, tuple)):
            raise TypeError(f"ignore must be a list of argument names: got {ignore!r}")
        if self._memory is None:
            return NotMemorizedFunc(func)
        if isinstance(func, MemorizedFunc):
            func = func.func
        return MemorizedFunc(
            func,
            self._memory,
            ignore=ignore,
            verbose=self._verbose if verbose is None else verbose,
            mmap_mode=self.mmap_mode if mmap_mode is False else mmap_mode,
            cache_validation_callback=cache_validation_callback,
            compress=self.compress,
            owner=self,
        )

    def eval(self, func, *args, **kwargs):
        """``func(*args, **kwargs)``, through the cache."""
        if self._memory is None:
            return func(*args, **kwargs)
        return self.cache(func)(*args, **kwargs)

    def clear(self, warn=True):
        """Removes every stored result."""
        if self._memory is not None:
            self._memory.clear()

    def reduce_size(self, bytes_limit=None, items_limit=None, age_limit=None):
        """Removes least recently used results until the limits hold (those
        given, else the Memory's own). memento also does this by itself after
        writes when the Memory has limits."""
        if self._memory is None:
            return
        self._memory.reduce_size(
            _parse_bytes(bytes_limit, "bytes_limit"),
            items_limit,
            _seconds(age_limit, "age_limit"),
        )

    def __reduce__(self):
        return (_memory_from, (self._pickled,))

    def __repr__(self):
        return f"Memory(location={self.location!r})"


def _is_bucket(location):
    """Does ``location`` name a bucket (``s3://bucket/prefix``)?"""
    return isinstance(location, str) and location.startswith("s3://")


def _bucket_options(options):
    """``backend_options`` of a bucket, checked: known names only (a typo
    must not fall back to the environment silently), sizes and durations
    in the units the core takes."""
    unknown = sorted(set(options) - set(_memento.S3_OPTIONS))
    if unknown:
        raise ValueError(
            f"backend_options: unknown option(s) {', '.join(map(repr, unknown))} for an s3:// "
            f"location; the options are {', '.join(_memento.S3_OPTIONS)}"
        )
    options = dict(options)
    if options.get("near_cache_limit") is not None:
        options["near_cache_limit"] = _parse_bytes(
            options["near_cache_limit"], "backend_options['near_cache_limit']"
        )
    if options.get("lease_ttl") is not None:
        options["lease_ttl"] = _seconds(options["lease_ttl"], "backend_options['lease_ttl']")
    if options.get("near_cache") is not None:
        options["near_cache"] = os.path.abspath(os.fspath(options["near_cache"]))
    return options


def _memory_from(options):
    """``Memory(**options)``: what a pickled ``Memory`` is made again from."""
    return Memory(**options)
