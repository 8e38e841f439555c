"""The pure storage core: guarded zfec, the segment codec, key wrapping and placement."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qss.codec import (
    MIN_SEGMENT,
    ObjectLayout,
    SegmentCodec,
    key_id,
    share_hash,
    unwrap_key,
    wrap_key,
)
from qss.errors import DecryptionError, IntegrityError, InvalidParameters, PlacementError
from qss.fec import Fec
from qss.placement import Site, place, replacements, spread_warnings


def layout(size: int, k: int = 4, n: int = 6, segment: int = MIN_SEGMENT) -> ObjectLayout:
    return ObjectLayout(size, segment, k, n, secrets.token_bytes(16), secrets.token_bytes(4))


# -- zfec, guarded ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "message"),
    [
        (0, 4, "need 1 <= k <= n <= 256, got k=0, n=4"),
        (5, 4, "need 1 <= k <= n <= 256, got k=5, n=4"),
        (1, 257, "need 1 <= k <= n <= 256, got k=1, n=257"),
        (True, 4, "k and n must be integers"),
    ],
)
def test_bad_parameters_never_reach_zfec(k: int, n: int, message: str) -> None:
    with pytest.raises(InvalidParameters, match=message.replace("(", r"\(")):
        Fec(k, n)


def test_duplicate_block_numbers_never_reach_zfec() -> None:
    fec = Fec(2, 4)
    blocks = fec.encode(b"abcdefgh")
    with pytest.raises(InvalidParameters, match="duplicate block numbers"):
        fec.encode_primary(fec.split(b"abcdefgh"), [1, 1])
    # A mapping cannot hold a duplicate, but fewer than k blocks is refused before zfec.
    with pytest.raises(InvalidParameters, match="need 2 blocks to decode, got 1"):
        fec.decode({3: blocks[3]}, 8)


@pytest.mark.parametrize("number", [4, 5, 255, -1])
def test_out_of_range_block_numbers_never_reach_zfec(number: int) -> None:
    fec = Fec(2, 4)
    blocks = fec.encode(b"abcdefgh")
    with pytest.raises(InvalidParameters, match=r"outside 0\.\.3"):
        fec.decode({0: blocks[0], number: blocks[1]}, 8)


def test_blocks_of_unequal_length_are_refused() -> None:
    fec = Fec(2, 4)
    blocks = fec.encode(b"abcdefgh")
    with pytest.raises(InvalidParameters, match="of one size"):
        fec.decode({0: blocks[0], 3: blocks[3] + b"x"}, 8)


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 3), (3, 3), (4, 6), (16, 20), (2, 256)])
def test_any_k_of_n_blocks_decode(k: int, n: int) -> None:
    data = secrets.token_bytes(1000)
    fec = Fec(k, n)
    blocks = fec.encode(data)
    subsets = list(itertools.combinations(range(n), k))
    for subset in subsets if len(subsets) <= 200 else subsets[:: len(subsets) // 200]:
        assert fec.decode({i: blocks[i] for i in subset}, len(data)) == data


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    shape=st.integers(min_value=1, max_value=12).flatmap(
        lambda n: st.tuples(st.integers(min_value=1, max_value=n), st.just(n))
    ),
    choice=st.randoms(use_true_random=False),
)
def test_property_any_k_of_n_shares_decode(data: bytes, shape: tuple[int, int], choice) -> None:  # type: ignore[no-untyped-def]
    k, n = shape
    fec = Fec(k, n)
    blocks = fec.encode(data)
    chosen = choice.sample(range(n), k)
    assert fec.decode({i: blocks[i] for i in chosen}, len(data)) == data


# -- segments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "count", "last"),
    [
        (0, 1, 0),
        (1, 1, 1),
        (MIN_SEGMENT, 1, MIN_SEGMENT),
        (MIN_SEGMENT + 1, 2, 1),
        (3 * MIN_SEGMENT, 3, MIN_SEGMENT),
    ],
    ids=["empty", "one-byte", "exactly-one-segment", "one-over", "exact-multiple"],
)
def test_segment_layout(size: int, count: int, last: int) -> None:
    shape = layout(size)
    assert shape.segment_count == count
    assert shape.plain_length(count - 1) == last


def test_segments_round_trip_and_rebuild_without_the_data_key() -> None:
    data = secrets.token_bytes(3 * MIN_SEGMENT + 17)
    shape = layout(len(data))
    codec = SegmentCodec(shape, secrets.token_bytes(32))
    segments = [
        codec.encode(i, data[i * MIN_SEGMENT : (i + 1) * MIN_SEGMENT])
        for i in range(shape.segment_count)
    ]
    keyless = SegmentCodec(shape, None)
    for segment in segments:
        survivors = {i: segment.blocks[i] for i in (1, 3, 4, 5)}
        assert keyless.rebuild(segment.index, survivors, [0, 2]) == [
            segment.blocks[0],
            segment.blocks[2],
        ]
        assert [share_hash(b) for b in segment.blocks] == list(segment.hashes)
    out = b"".join(codec.decode(s.index, {i: s.blocks[i] for i in (5, 0, 2, 4)}) for s in segments)
    assert out == data
    with pytest.raises(DecryptionError, match="needs the object's data key"):
        keyless.decode(0, {i: segments[0].blocks[i] for i in range(4)})


def test_corrupted_block_past_the_hash_check_is_refused_by_aead() -> None:
    shape = layout(100)
    codec = SegmentCodec(shape, secrets.token_bytes(32))
    segment = codec.encode(0, secrets.token_bytes(100))
    flipped = bytearray(segment.blocks[1])
    flipped[0] ^= 1
    with pytest.raises(DecryptionError, match="segment 0 fails authentication"):
        codec.decode(
            0, {0: segment.blocks[0], 1: bytes(flipped), 2: segment.blocks[2], 3: segment.blocks[3]}
        )


def test_reordered_segments_fail_authentication() -> None:
    data = secrets.token_bytes(2 * MIN_SEGMENT)
    shape = layout(len(data))
    codec = SegmentCodec(shape, secrets.token_bytes(32))
    first = codec.encode(0, data[:MIN_SEGMENT])
    with pytest.raises(DecryptionError):
        codec.decode(1, {i: first.blocks[i] for i in range(4)})


def test_segment_spliced_from_another_object_fails_authentication() -> None:
    key = secrets.token_bytes(32)
    one, other = layout(100), layout(100)
    spliced = SegmentCodec(other, key).encode(0, secrets.token_bytes(100))
    with pytest.raises(DecryptionError):
        SegmentCodec(one, key).decode(0, {i: spliced.blocks[i] for i in range(4)})


def test_truncated_object_fails_authentication() -> None:
    """The AAD binds the object's size: the same segment read as part of a shorter object fails."""
    key = secrets.token_bytes(32)
    long = layout(2 * MIN_SEGMENT)
    short = ObjectLayout(MIN_SEGMENT, MIN_SEGMENT, 4, 6, long.object_nonce, long.nonce_prefix)
    segment = SegmentCodec(long, key).encode(0, secrets.token_bytes(MIN_SEGMENT))
    with pytest.raises(DecryptionError):
        SegmentCodec(short, key).decode(0, {i: segment.blocks[i] for i in range(4)})


def test_blocks_of_the_wrong_size_are_an_integrity_error() -> None:
    shape = layout(100)
    codec = SegmentCodec(shape, secrets.token_bytes(32))
    segment = codec.encode(0, secrets.token_bytes(100))
    with pytest.raises(IntegrityError, match="expected 29"):
        codec.decode(0, {i: segment.blocks[i] + b"junk" for i in range(4)})


def test_key_wrapping() -> None:
    storage, data = secrets.token_bytes(32), secrets.token_bytes(32)
    wrapped = wrap_key(storage, data)
    assert unwrap_key(storage, wrapped) == data
    with pytest.raises(DecryptionError, match="does not unwrap"):
        unwrap_key(secrets.token_bytes(32), wrapped)
    assert key_id(storage) != key_id(data)
    assert len(key_id(storage)) == 16


# -- placement -------------------------------------------------------------------------------------


def sites(*domains: str) -> list[Site]:
    return [Site(f"{domain}-{index}", domain) for index, domain in enumerate(domains)]


def test_placement_spreads_over_domains_first() -> None:
    placement = place(6, sites("a", "a", "b", "b", "c", "c"))
    per_domain = [site.failure_domain for site in placement.values()]
    assert sorted(per_domain) == ["a", "a", "b", "b", "c", "c"]
    assert len({site.backend for site in placement.values()}) == 6
    assert per_domain[:3] == ["a", "b", "c"]


def test_placement_needs_n_distinct_backends() -> None:
    with pytest.raises(PlacementError, match="6 shares need 6 distinct backends; 5 given"):
        place(6, sites("a", "b", "c", "d", "e"))


def test_spread_warnings() -> None:
    assert spread_warnings(place(3, sites("a", "b", "c")), 2) == []
    survivable = spread_warnings(place(6, sites("a", "a", "b", "b", "c", "c")), 4)
    assert survivable == [
        "shares share failure domains ('c' holds 2 of 6); the object still survives the loss "
        "of any one domain"
    ]
    fatal = spread_warnings(place(6, sites("a", "a", "a", "b", "b", "b")), 4)
    assert fatal == [
        "failure domain 'b' holds 3 of 6 shares, more than the 2 a 4-of-6 object can lose: "
        "losing that domain loses the object"
    ]


def test_replacements_prefer_fresh_backends_in_new_domains() -> None:
    everything = sites("a", "b", "c", "d")
    current = place(3, everything[:3])
    chosen = replacements(current, [1], everything)
    assert chosen == {1: everything[3]}


def test_replacement_in_place_when_no_fresh_backend_is_left() -> None:
    everything = sites("a", "b", "c")
    current = place(3, everything)
    assert replacements(current, [2], everything) == {2: current[2]}
    with pytest.raises(PlacementError, match="no backend left for share 2"):
        replacements(current, [2], everything[:2])
