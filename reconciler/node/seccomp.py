"""The seccomp filter every replica runs under: a classic BPF program, as bubblewrap's
`--seccomp FD` takes it (what libseccomp's `seccomp_export_bpf` writes). Pure: the bytes of
the program for an architecture.

No capability and no_new_privs already take most of what a filter guards; what they leave open
is the kernel's largest attack surface, reachable without any privilege: new user namespaces
(in one, a process holds every capability over its own namespaces, and the code behind most
container escapes is in reach), new mount APIs, io_uring, BPF, perf events, userfaultfd and
the keyring. Those are refused with EPERM, as Docker's and the kubelet's RuntimeDefault
profile refuse them for a process without CAP_SYS_ADMIN:

- `unshare` and `setns`: always; `clone` with any CLONE_NEW* flag; `clone3` answers ENOSYS,
  since its flags are in memory a filter cannot read, and the C library then uses `clone`;
- mounting: `mount`, `umount2`, `pivot_root`, `chroot` and the new mount API (`open_tree`,
  `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr`);
- `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`, `keyctl`, `add_key`, `request_key`,
  `open_by_handle_at`, modules, `kexec_*`, `reboot`, `swapon`/`swapoff`, `acct`, `quotactl`,
  `syslog`, `sethostname`, `setdomainname`, `lookup_dcookie`.

Everything else is allowed. A system call of another architecture than the filter's (an x86_64
process making x32 or i386 calls) kills the process.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0 = 0, 4, 16
# classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM, ENOSYS = 1, 38
X32_SYSCALL_BIT = 0x40000000
# CLONE_NEWTIME | NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEW_ANY = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NEW_ANY |= 0x20000000 | 0x40000000

REFUSED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl",
    "add_key", "request_key", "open_by_handle_at", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "syslog", "sethostname", "setdomainname", "lookup_dcookie",
)  # fmt: skip


@dataclass(frozen=True)
class Arch:
    name: str
    audit: int  # AUDIT_ARCH_*
    numbers: dict[str, int]  # system call numbers by name (REFUSED, clone, clone3)
    x32: bool = False  # x86_64: refuse the x32 ABI's numbers too


# From the kernel's uapi headers (asm/unistd_64.h; asm-generic/unistd.h for arm64).
X86_64 = Arch(
    "x86_64",
    0xC000003E,
    {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 250, "add_key": 248,
        "request_key": 249, "open_by_handle_at": 304, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
        "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
        "syslog": 103, "sethostname": 170, "setdomainname": 171, "lookup_dcookie": 212,
        "clone": 56, "clone3": 435,
    },
    x32=True,
)  # fmt: skip
AARCH64 = Arch(
    "aarch64",
    0xC00000B7,
    {
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 219, "add_key": 217,
        "request_key": 218, "open_by_handle_at": 265, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "quotactl": 60,
        "syslog": 116, "sethostname": 161, "setdomainname": 162, "lookup_dcookie": 18,
        "clone": 220, "clone3": 435,
    },
)  # fmt: skip
ARCHES = {"x86_64": X86_64, "amd64": X86_64, "aarch64": AARCH64, "arm64": AARCH64}


class UnknownArch(ValueError):
    """No filter is known for this machine's architecture."""


def arch_of(machine: str) -> Arch:
    """The filter's architecture for `platform.machine()`."""
    found = ARCHES.get(machine.lower())
    if found is None:
        raise UnknownArch(f"no seccomp filter for the {machine!r} architecture")
    return found


def program(arch: Arch) -> bytes:
    """The filter as bubblewrap reads it: struct sock_filter[] in the machine's byte order
    (both architectures here are little-endian)."""
    # (opcode, k, label to jump to when true, label when false): jumps go forward to the
    # labelled blocks placed after the main sequence.
    main: list[_Step] = [
        (_LD_W_ABS, _ARCH, None, None),
        (_JEQ_K, arch.audit, None, "kill"),
        (_LD_W_ABS, _NR, None, None),
    ]
    if arch.x32:
        main.append((_JGE_K, X32_SYSCALL_BIT, "kill", None))
    main += [(_JEQ_K, arch.numbers[name], "deny", None) for name in REFUSED]
    main += [
        (_JEQ_K, arch.numbers["clone3"], "enosys", None),
        (_JEQ_K, arch.numbers["clone"], "clone", None),
        (_RET_K, SECCOMP_RET_ALLOW, None, None),
    ]
    blocks: dict[str, list[_Step]] = {
        "clone": [
            (_LD_W_ABS, _ARG0, None, None),  # the flags (their low 32 bits hold every CLONE_NEW*)
            (_JSET_K, CLONE_NEW_ANY, "deny", None),
            (_RET_K, SECCOMP_RET_ALLOW, None, None),
        ],
        "deny": [(_RET_K, SECCOMP_RET_ERRNO | EPERM, None, None)],
        "enosys": [(_RET_K, SECCOMP_RET_ERRNO | ENOSYS, None, None)],
        "kill": [(_RET_K, SECCOMP_RET_KILL_PROCESS, None, None)],
    }
    steps = list(main)
    start: dict[str, int] = {}
    for label, block in blocks.items():
        start[label] = len(steps)
        steps += block
    packed = []
    for index, (opcode, k, if_true, if_false) in enumerate(steps):
        jt = start[if_true] - index - 1 if if_true else 0
        jf = start[if_false] - index - 1 if if_false else 0
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("a seccomp jump is out of range")  # the program grew too long
        packed.append(struct.pack("<HBBI", opcode, jt, jf, k))
    return b"".join(packed)


_Step = tuple[int, int, str | None, str | None]
