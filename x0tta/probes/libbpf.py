"""Loading the probes through libbpf (``libbpf.so.1``) over ctypes. Blocking: call from a thread.

What it does, in the order the probes service uses it:

1. :meth:`ProbeObject.load` opens the object file, sets the sizes of the maps from the config
   (``bpf_map__set_max_entries``), points every map at a pin under the pin directory
   (``bpf_map__set_pin_path``) and loads. libbpf reuses a map already pinned there, so the counters
   survive an agent restart; a pinned map whose shape no longer matches (the config changed its
   size) is unpinned first and starts empty, and the caller is told which.
2. :meth:`ProbeObject.attach` puts a program on an interface's clsact ingress or egress hook
   (``bpf_tc_hook_create``, then ``bpf_tc_attach`` with a fixed handle and priority and
   ``BPF_TC_F_REPLACE``): attaching again, from this process or from a restarted one, replaces the
   filter instead of adding a second one.
3. :class:`BpfMap` reads maps in batches (``bpf_map_lookup_batch``; one syscall per few hundred
   entries), falling back to key-by-key iteration on kernels without batch support.
4. :meth:`ProbeObject.detach` removes the filters; :meth:`ProbeObject.close` drops the object
   (pinned maps stay).

libbpf reports errors as negative errno values; they become :class:`BpfError` carrying ``errno``
and what libbpf printed (the verifier log, when loading fails).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from x0tta.common.errors import X0ttaError

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_TYPES = (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH)

# Our filters' identity on every hook: one handle and priority, so attach is replace-or-create.
TC_HANDLE = 0x7830  # "x0"
TC_PRIORITY = 0x7830
HOOKS = {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS}
BATCH = 256


class BpfError(X0ttaError):
    def __init__(self, what: str, err: int, log: str = "") -> None:
        self.errno = abs(err)
        self.log = log
        tail = f"\n{log}" if log else ""
        super().__init__(f"{what}: {os.strerror(self.errno)} (errno {self.errno}){tail}")


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):  # struct bpf_map_info, uapi/linux/bpf.h
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIBBPF_WARN, _LIBBPF_INFO = 0, 1


class _Lib:
    """The libbpf functions used here, with their prototypes; one per process."""

    _instance: _Lib | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            self.bpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise BpfError(
                "libbpf.so.1 not found (install the libbpf1 package)", errno_mod.ENOENT, str(exc)
            ) from exc
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        b, vp, i, u32, cp = self.bpf, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
        sigs = {
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (i, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_map__set_max_entries": (i, [vp, u32]),
            "bpf_map__set_pin_path": (i, [vp, cp]),
            "bpf_map__fd": (i, [vp]),
            "bpf_map__type": (i, [vp]),
            "bpf_map__key_size": (u32, [vp]),
            "bpf_map__value_size": (u32, [vp]),
            "bpf_map__max_entries": (u32, [vp]),
            "bpf_program__fd": (i, [vp]),
            "bpf_tc_hook_create": (i, [vp]),
            "bpf_tc_attach": (i, [vp, vp]),
            "bpf_tc_detach": (i, [vp, vp]),
            "bpf_tc_query": (i, [vp, vp]),
            "bpf_map_lookup_elem": (i, [i, vp, vp]),
            "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
            "bpf_map_delete_elem": (i, [i, vp]),
            "bpf_map_get_next_key": (i, [i, vp, vp]),
            "bpf_map_lookup_batch": (i, [i, vp, vp, vp, vp, ctypes.POINTER(u32), vp]),
            "bpf_obj_get": (i, [cp]),
            "bpf_obj_get_info_by_fd": (i, [i, vp, ctypes.POINTER(u32)]),
            "libbpf_num_possible_cpus": (i, []),
            "libbpf_set_print": (vp, [_PRINT_FN]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(b, name)
            fn.restype, fn.argtypes = res, args
        self.libc.vsnprintf.restype = ctypes.c_int
        self.libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.log: list[str] = []
        self._printer = _PRINT_FN(self._print)  # kept alive as long as libbpf may call it
        b.libbpf_set_print(self._printer)
        self.ncpus = b.libbpf_num_possible_cpus()

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        if level > _LIBBPF_INFO:  # debug chatter
            return 0
        buf = ctypes.create_string_buffer(1 << 18)  # the verifier log comes as one message
        self.libc.vsnprintf(buf, len(buf), fmt, args)
        self.log.append(buf.value.decode(errors="replace"))
        del self.log[:-200]
        return 0

    def take_log(self) -> str:
        text, self.log[:] = "".join(self.log).strip(), []
        return text[-4000:]

    @classmethod
    def get(cls) -> _Lib:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


def _check(what: str, rc: int, lib: _Lib | None = None) -> int:
    if rc < 0:
        raise BpfError(what, rc, lib.take_log() if lib else "")
    return rc


@dataclass(frozen=True)
class MapShape:
    type: int
    key_size: int
    value_size: int
    max_entries: int


class BpfMap:
    """One loaded map, read and written by file descriptor."""

    def __init__(self, lib: _Lib, name: str, fd: int, shape: MapShape) -> None:
        self._lib, self.name, self.fd, self.shape = lib, name, fd, shape
        percpu = shape.type in PERCPU_TYPES
        self.value_len = ((shape.value_size + 7) // 8 * 8) * lib.ncpus if percpu else shape.value_size
        self._batch_ok = True

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self.value_len)
        rc = self._lib.bpf.bpf_map_lookup_elem(self.fd, key, value)
        if rc == -errno_mod.ENOENT:
            return None
        _check(f"lookup in {self.name}", rc)
        return value.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        _check(f"update of {self.name}", self._lib.bpf.bpf_map_update_elem(self.fd, key, value, flags))

    def delete(self, key: bytes) -> bool:
        rc = self._lib.bpf.bpf_map_delete_elem(self.fd, key)
        if rc == -errno_mod.ENOENT:
            return False
        _check(f"deletion from {self.name}", rc)
        return True

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every entry; batched when the kernel can, key by key otherwise."""
        if self._batch_ok:
            try:
                return list(self._items_batch())
            except BpfError as exc:
                if exc.errno not in (errno_mod.EINVAL, errno_mod.ENOTSUP, 524):  # 524: ENOTSUPP
                    raise
                self._batch_ok = False
        return list(self._items_iter())

    def _items_batch(self) -> Iterator[tuple[bytes, bytes]]:
        ks, vs = self.shape.key_size, self.value_len
        count = min(BATCH, max(self.shape.max_entries, 1))
        token_len = max(ks, 8)
        in_tok, out_tok = ctypes.create_string_buffer(token_len), ctypes.create_string_buffer(token_len)
        opts = _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)
        first = True
        while True:
            keys = ctypes.create_string_buffer(ks * count)
            values = ctypes.create_string_buffer(vs * count)
            n = ctypes.c_uint32(count)
            rc = self._lib.bpf.bpf_map_lookup_batch(
                self.fd, None if first else in_tok, out_tok, keys, values, ctypes.byref(n), ctypes.byref(opts)
            )
            if rc == -errno_mod.ENOSPC and n.value == 0:  # a hash bucket larger than the batch
                count *= 2
                continue
            if rc < 0 and rc != -errno_mod.ENOENT:
                _check(f"batch lookup in {self.name}", rc)
            kraw, vraw = keys.raw, values.raw
            for j in range(n.value):
                yield kraw[j * ks : (j + 1) * ks], vraw[j * vs : (j + 1) * vs]
            if rc == -errno_mod.ENOENT:
                return
            ctypes.memmove(in_tok, out_tok, token_len)
            first = False

    def _items_iter(self) -> Iterator[tuple[bytes, bytes]]:
        key = None
        nxt = ctypes.create_string_buffer(self.shape.key_size)
        while True:
            rc = self._lib.bpf.bpf_map_get_next_key(self.fd, key, nxt)
            if rc == -errno_mod.ENOENT:
                return
            _check(f"iterating {self.name}", rc)
            key = nxt.raw
            value = self.lookup(key)
            if value is not None:  # deleted between the two calls
                yield key, value


def pinned_shape(path: Path) -> MapShape | None:
    """The shape of a map pinned at ``path``, or None if nothing is pinned there."""
    lib = _Lib.get()
    if not path.exists():
        return None
    fd = _check(f"opening pinned map {path}", lib.bpf.bpf_obj_get(str(path).encode()))
    try:
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        _check(f"info of {path}", lib.bpf.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)))
        return MapShape(info.type, info.key_size, info.value_size, info.max_entries)
    finally:
        os.close(fd)


def _shape(lib: _Lib, handle: int) -> MapShape:
    b = lib.bpf
    return MapShape(b.bpf_map__type(handle), b.bpf_map__key_size(handle), b.bpf_map__value_size(handle),
                    b.bpf_map__max_entries(handle))  # fmt: skip


@dataclass(frozen=True)
class Attachment:
    ifindex: int
    hook: str  # "ingress" or "egress"


class ProbeObject:
    """A loaded object: its maps (pinned) and programs."""

    def __init__(self, lib: _Lib, obj: int, maps: dict[str, BpfMap], progs: dict[str, int], reset: list[str]):
        self._lib, self._obj = lib, obj
        self.maps, self.progs = maps, progs
        self.reset_maps = reset  # pinned maps dropped because their shape changed
        self.attached: set[Attachment] = set()

    @classmethod
    def load(
        cls,
        path: Path,
        map_sizes: dict[str, int],
        pin_dir: Path | None,
        map_names: tuple[str, ...],
        prog_names: tuple[str, ...],
    ) -> ProbeObject:
        lib = _Lib.get()
        if not path.is_file():
            raise BpfError(f"eBPF object {path}", errno_mod.ENOENT)
        lib.take_log()
        obj = lib.bpf.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            raise BpfError(f"opening {path}", ctypes.get_errno() or errno_mod.EINVAL, lib.take_log())
        try:
            reset: list[str] = []
            handles = {}
            for name in map_names:
                handle = lib.bpf.bpf_object__find_map_by_name(obj, name.encode())
                if not handle:
                    raise BpfError(f"map {name} not in {path}", errno_mod.ENOENT)
                handles[name] = handle
                if name in map_sizes:
                    _check(f"sizing {name}", lib.bpf.bpf_map__set_max_entries(handle, map_sizes[name]), lib)
                if pin_dir is not None:
                    pin = pin_dir / name
                    have = pinned_shape(pin)
                    if have is not None and have != _shape(lib, handle):
                        pin.unlink()
                        reset.append(name)
                    _check(f"pinning {name}", lib.bpf.bpf_map__set_pin_path(handle, str(pin).encode()), lib)
            _check(f"loading {path}", lib.bpf.bpf_object__load(obj), lib)
            maps = {}
            for name, handle in handles.items():
                fd = _check(f"fd of {name}", lib.bpf.bpf_map__fd(handle))
                maps[name] = BpfMap(lib, name, fd, _shape(lib, handle))
            progs = {}
            for name in prog_names:
                prog = lib.bpf.bpf_object__find_program_by_name(obj, name.encode())
                if not prog:
                    raise BpfError(f"program {name} not in {path}", errno_mod.ENOENT)
                progs[name] = _check(f"fd of {name}", lib.bpf.bpf_program__fd(prog))
        except BaseException:
            lib.bpf.bpf_object__close(obj)
            raise
        return cls(lib, obj, maps, progs, reset)

    @staticmethod
    def _hook(ifindex: int, hook: str) -> _TcHook:
        return _TcHook(ctypes.sizeof(_TcHook), ifindex, HOOKS[hook], 0, 0)

    def attach(self, ifindex: int, hook: str, prog: str) -> None:
        """Put ``prog`` on ``hook`` of ``ifindex``, replacing our earlier filter if there is one."""
        h = self._hook(ifindex, hook)
        rc = self._lib.bpf.bpf_tc_hook_create(ctypes.byref(h))
        if rc < 0 and rc != -errno_mod.EEXIST:
            _check(f"creating clsact on ifindex {ifindex}", rc, self._lib)
        opts = _TcOpts(ctypes.sizeof(_TcOpts), self.progs[prog], BPF_TC_F_REPLACE, 0, TC_HANDLE, TC_PRIORITY, 0)
        _check(
            f"attaching {prog} to ifindex {ifindex} {hook}",
            self._lib.bpf.bpf_tc_attach(ctypes.byref(h), ctypes.byref(opts)),
            self._lib,
        )
        self.attached.add(Attachment(ifindex, hook))

    def detach(self, ifindex: int, hook: str) -> None:
        """Remove our filter from the hook (gone already, or the interface gone: fine)."""
        h = self._hook(ifindex, hook)
        opts = _TcOpts(ctypes.sizeof(_TcOpts), 0, 0, 0, TC_HANDLE, TC_PRIORITY, 0)
        rc = self._lib.bpf.bpf_tc_detach(ctypes.byref(h), ctypes.byref(opts))
        self.attached.discard(Attachment(ifindex, hook))
        if rc < 0 and rc not in (-errno_mod.ENOENT, -errno_mod.ENODEV, -errno_mod.EINVAL):
            _check(f"detaching from ifindex {ifindex} {hook}", rc, self._lib)

    def query(self, ifindex: int, hook: str) -> int | None:
        """The program id of our filter on the hook, or None."""
        h = self._hook(ifindex, hook)
        opts = _TcOpts(ctypes.sizeof(_TcOpts), 0, 0, 0, TC_HANDLE, TC_PRIORITY, 0)
        rc = self._lib.bpf.bpf_tc_query(ctypes.byref(h), ctypes.byref(opts))
        return opts.prog_id if rc == 0 else None

    def detach_all(self) -> None:
        for att in sorted(self.attached, key=lambda a: (a.ifindex, a.hook)):
            self.detach(att.ifindex, att.hook)

    def close(self) -> None:
        if self._obj:
            self._lib.bpf.bpf_object__close(self._obj)
            self._obj = 0
            self.maps, self.progs = {}, {}

    @property
    def ncpus(self) -> int:
        return self._lib.ncpus


BPF_FS_MAGIC_NAME = "bpf"


def ensure_bpffs(pin_dir: Path) -> None:
    """Make ``pin_dir`` exist on a bpffs, mounting one on its parent if none is there (systemd
    mounts /sys/fs/bpf on most systems; minimal ones and fresh network namespaces may not)."""
    from x0tta.probes.core import mount_fstype

    try:
        mounts = Path("/proc/self/mounts").read_text()
        if mount_fstype(mounts, str(pin_dir.parent)) != BPF_FS_MAGIC_NAME:
            lib = _Lib.get()
            lib.libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
            pin_dir.parent.mkdir(parents=True, exist_ok=True)
            rc = lib.libc.mount(b"bpf", str(pin_dir.parent).encode(), b"bpf", 0, b"mode=0700")
            if rc != 0:
                raise BpfError(f"mounting bpffs on {pin_dir.parent}", ctypes.get_errno())
        pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BpfError(f"preparing the pin directory {pin_dir}", exc.errno or errno_mod.EIO) from exc
