"""release-monitoring.org's rules (fmn_core.catalog.anitya)."""

from __future__ import annotations

from typing import Any

import pytest

from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus, owner


@pytest.fixture(scope="module")
def flatpak_release(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus,
        lambda d: (
            d["topic"].endswith("anitya.project.version.update.v2")
            and d["body"]["project"]["name"] == "flatpak"
        ),
    )


def test_anitya_new_release_matches_project_or_package(
    rules: Catalog, flatpak_release: dict[str, Any]
) -> None:
    message = changed(flatpak_release)
    assert check(rules, "anitya_new_release", message, project="flatpak")
    assert check(rules, "anitya_new_release", message, project="Flatpak")
    assert not check(rules, "anitya_new_release", message, project="flatpak-builder")
    renamed = changed(
        flatpak_release, project={**flatpak_release["body"]["project"], "name": "flatpak-upstream"}
    )
    assert check(rules, "anitya_new_release", renamed, project="flatpak")  # the Fedora package


def test_anitya_new_release_for_my_packages_uses_ownership(
    rules: Catalog, flatpak_release: dict[str, Any]
) -> None:
    message = changed(flatpak_release)
    assert check(
        rules,
        "anitya_new_release_for_my_packages",
        message,
        owner("kalev", {"kalev": ["flatpak", "gnome-shell"]}),
    )
    assert not check(
        rules,
        "anitya_new_release_for_my_packages",
        message,
        owner("kalev", {"kalev": ["gnome-shell"]}),
    )
