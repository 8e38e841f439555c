"""Where shares go: distinct backends, spread over failure domains as evenly as possible. Pure.

Shares go round-robin over failure domains, a distinct backend each time, so that losing one
whole domain loses as few shares as the backends allow. Warnings say when shares share a domain
and whether the object would survive that domain's loss (at most n - k shares in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qss.errors import PlacementError


@dataclass(frozen=True, slots=True)
class Site:
    """A backend as placement sees it."""

    backend: str
    failure_domain: str


def _by_domain(sites: Sequence[Site]) -> dict[str, list[Site]]:
    domains: dict[str, list[Site]] = {}
    for site in sites:
        domains.setdefault(site.failure_domain, []).append(site)
    return domains


def place(n: int, sites: Sequence[Site]) -> dict[int, Site]:
    """Share number -> site for n shares, each on a backend of its own."""
    names = [site.backend for site in sites]
    if len(set(names)) != len(names):
        raise PlacementError(f"backend names must be distinct: {sorted(names)}")
    if len(sites) < n:
        raise PlacementError(
            f"{n} shares need {n} distinct backends; {len(sites)} given "
            f"({', '.join(names) or 'none'})"
        )
    domains = _by_domain(sites)
    order = sorted(domains)
    placement: dict[int, Site] = {}
    round_ = 0
    while len(placement) < n:
        for domain in order:
            if round_ < len(domains[domain]) and len(placement) < n:
                placement[len(placement)] = domains[domain][round_]
        round_ += 1
    return placement


def check_spread(placement: Mapping[int, Site], min_domains: int) -> None:
    """Refuse a placement over fewer failure domains than configured."""
    domains = sorted({site.failure_domain for site in placement.values()})
    if len(domains) < min_domains:
        raise PlacementError(
            f"shares must span at least {min_domains} failure domains; the backends given "
            f"span {len(domains)} ({', '.join(domains)})"
        )


def spread_warnings(placement: Mapping[int, Site], k: int) -> list[str]:
    """What a user should know about how exposed the placement is to a domain failure."""
    counts: dict[str, int] = {}
    for site in placement.values():
        counts[site.failure_domain] = counts.get(site.failure_domain, 0) + 1
    n = len(placement)
    domain, most = max(counts.items(), key=lambda item: (item[1], item[0]))
    if most <= 1:
        return []
    if most > n - k:
        return [
            f"failure domain {domain!r} holds {most} of {n} shares, more than the {n - k} a "
            f"{k}-of-{n} object can lose: losing that domain loses the object"
        ]
    return [
        f"shares share failure domains ({domain!r} holds {most} of {n}); the object still "
        "survives the loss of any one domain"
    ]


def replacements(
    current: Mapping[int, Site], lost: Sequence[int], available: Sequence[Site]
) -> dict[int, Site]:
    """New sites for the `lost` shares: backends holding no share of this object and not the
    one that lost it, in the least used failure domains first; the lost share's own backend when
    it is still available and no other is left (a rewrite in place)."""
    keep = {share: site for share, site in current.items() if share not in lost}
    used = {site.backend for site in keep.values()}
    counts: dict[str, int] = {}
    for site in keep.values():
        counts[site.failure_domain] = counts.get(site.failure_domain, 0) + 1
    available_names = {site.backend for site in available}
    # A backend that just lost a share (a failing disk?) is the last choice for a new one.
    failing = {current[share].backend for share in lost if share in current}
    chosen: dict[int, Site] = {}
    for share in sorted(lost):
        fresh = [site for site in available if site.backend not in used | failing]
        if fresh:
            site = min(fresh, key=lambda s: (counts.get(s.failure_domain, 0), s.failure_domain))
        elif share in current and current[share].backend in available_names:
            site = current[share]
        else:
            raise PlacementError(
                f"no backend left for share {share}: every reachable backend already holds a "
                "share of this object"
            )
        chosen[share] = site
        used.add(site.backend)
        counts[site.failure_domain] = counts.get(site.failure_domain, 0) + 1
    return chosen
