"""A guarded zfec: k-of-n erasure coding that never hands zfec input it mishandles.

Measured facts about zfec 1.6 that this wrapper exists for: duplicate block numbers can hang
the process with the GIL held; block numbers between n and 255 read past its matrix and return
garbage; `Decoder.decode` reorders the list it is given; a corrupted block decodes silently to
wrong data. So: parameters and block numbers are checked here, every block's hash is checked by
the caller before it gets here, and zfec only ever sees fresh tuples.

Pure: bytes in, bytes out. zfec releases the GIL while it computes, so a thread pool encodes
several segments at once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import zfec

from qss.errors import InvalidParameters

MAX_SHARES = 256


def check_parameters(k: int, n: int) -> None:
    if (
        not isinstance(k, int)
        or not isinstance(n, int)
        or isinstance(k, bool)
        or isinstance(n, bool)
    ):
        raise InvalidParameters(f"k and n must be integers, got {k!r} and {n!r}")
    if not 1 <= k <= n <= MAX_SHARES:
        raise InvalidParameters(f"need 1 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")


def block_size(length: int, k: int) -> int:
    """The size of each of the k blocks `length` bytes are split into (zero-padded)."""
    return max(1, -(-length // k))


class Fec:
    """Encode and decode with fixed k and n. Safe to share between threads."""

    def __init__(self, k: int, n: int) -> None:
        check_parameters(k, n)
        self.k = k
        self.n = n
        self._local = threading.local()

    def _coders(self) -> tuple[zfec.Encoder, zfec.Decoder]:
        coders: tuple[zfec.Encoder, zfec.Decoder] | None = getattr(self._local, "coders", None)
        if coders is None:
            coders = (zfec.Encoder(self.k, self.n), zfec.Decoder(self.k, self.n))
            self._local.coders = coders
        return coders

    def split(self, data: bytes) -> tuple[bytes, ...]:
        """`data` zero-padded and cut into k primary blocks of equal size."""
        size = block_size(len(data), self.k)
        padded = data.ljust(size * self.k, b"\0")
        return tuple(padded[index * size : (index + 1) * size] for index in range(self.k))

    def encode(self, data: bytes, wanted: Sequence[int] | None = None) -> list[bytes]:
        """The n blocks of `data` (or only the block numbers in `wanted`, in that order)."""
        return self.encode_primary(self.split(data), wanted)

    def encode_primary(
        self, primary: Sequence[bytes], wanted: Sequence[int] | None = None
    ) -> list[bytes]:
        """Blocks from the k primary blocks (as `decode_primary` returns them)."""
        if len(primary) != self.k or len({len(block) for block in primary}) != 1:
            raise InvalidParameters(f"need {self.k} primary blocks of one size")
        numbers = tuple(range(self.n)) if wanted is None else tuple(wanted)
        self._check_numbers(numbers, allow_fewer=True)
        encoder, _ = self._coders()
        return [bytes(block) for block in encoder.encode(tuple(primary), numbers)]

    def decode_primary(self, blocks: Mapping[int, bytes]) -> tuple[bytes, ...]:
        """The k primary blocks, from any k (or more) blocks by block number.

        The caller has verified every block's hash: zfec turns a bad block into bad data.
        """
        if len(blocks) < self.k:
            raise InvalidParameters(f"need {self.k} blocks to decode, got {len(blocks)}")
        # Primary blocks first: decoding them is a copy, not arithmetic.
        numbers = tuple(sorted(blocks)[: self.k])
        self._check_numbers(numbers, allow_fewer=False)
        chosen = tuple(blocks[number] for number in numbers)
        if len({len(block) for block in chosen}) != 1 or not chosen[0]:
            raise InvalidParameters("blocks to decode must be non-empty and of one size")
        _, decoder = self._coders()
        # Fresh tuples: zfec reorders what it is given.
        return tuple(bytes(block) for block in decoder.decode(tuple(chosen), tuple(numbers)))

    def decode(self, blocks: Mapping[int, bytes], length: int) -> bytes:
        """The first `length` bytes of the data the blocks encode."""
        data = b"".join(self.decode_primary(blocks))
        if length > len(data):
            raise InvalidParameters(f"asked for {length} bytes, the blocks hold {len(data)}")
        return data[:length]

    def _check_numbers(self, numbers: Sequence[int], *, allow_fewer: bool) -> None:
        if len(set(numbers)) != len(numbers):
            raise InvalidParameters(f"duplicate block numbers {sorted(numbers)}")
        bad = [number for number in numbers if not 0 <= number < self.n]
        if bad:
            raise InvalidParameters(f"block numbers {bad} are outside 0..{self.n - 1}")
        if not allow_fewer and len(numbers) != self.k:
            raise InvalidParameters(f"need exactly {self.k} block numbers, got {len(numbers)}")
