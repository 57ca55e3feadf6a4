"""Lean installs: each front end names the pip extra it is missing; one version number.

The console scripts run as a user runs them, in a subprocess of this
environment, with the extra's module hidden by a ``sitecustomize`` that puts
``None`` in ``sys.modules`` for it (so ``import textual`` raises
``ModuleNotFoundError`` there, as on a host without it).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import fmn_core
import fmn_daemon
import fmn_tui
from fmn_core import extras
from fmn_core.errors import MissingExtra

SCRIPTS = Path(sysconfig.get_path("scripts"))

HIDE = """\
import os
import sys

for name in os.environ["FMN_TEST_HIDE"].split(","):
    sys.modules[name] = None  # "import name" now raises ModuleNotFoundError
"""


def run_hidden(tmp_path: Path, hidden: str, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with the modules in ``hidden`` (comma-separated) not importable."""
    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "FMN_TEST_HIDE": hidden,
    }
    return subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_fmn_tui_without_textual_names_the_tui_extra(tmp_path: Path) -> None:
    result = run_hidden(tmp_path, "textual", [str(SCRIPTS / "fmn-tui")])
    assert result.returncode == 2, result.stderr
    assert result.stderr == "fmn-tui needs the 'tui' extra: pip install 'fmn[tui]'\n"
    assert result.stdout == ""


def test_fmn_tui_with_textual_starts_its_cli(tmp_path: Path) -> None:
    # The same script with nothing hidden reaches fmn_tui.cli (its --help).
    result = run_hidden(tmp_path, "fmn_test_nothing_hidden", [str(SCRIPTS / "fmn-tui"), "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: fmn-tui" in result.stdout


def test_fmn_daemon_demo_without_aiosmtpd_names_the_demo_extra(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    result = run_hidden(
        tmp_path, "aiosmtpd", [str(SCRIPTS / "fmn-daemon"), "demo", "--dir", str(demo_dir)]
    )
    assert result.returncode == 2, result.stderr
    assert (
        "fmn-daemon: error: fmn-daemon demo needs the 'demo' extra: pip install 'fmn[demo]'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not demo_dir.exists()  # it stopped before making anything


def test_the_daemon_and_the_core_need_no_extra(tmp_path: Path) -> None:
    # The lean install: every module of fmn_core and fmn_daemon imports, and the
    # daemon's command runs, without Textual, Limnoria, aiosmtpd or python-fedora.
    probe = (
        "import importlib, pkgutil, fmn_core, fmn_daemon\n"
        "for package in (fmn_core, fmn_daemon):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "        print(module.name)\n"
    )
    hidden = "textual,rich,supybot,aiosmtpd,fedora"
    imported = run_hidden(tmp_path, hidden, [sys.executable, "-c", probe])
    assert imported.returncode == 0, imported.stderr
    assert {"fmn_core.preferences", "fmn_daemon.service", "fmn_daemon.demo"} <= set(
        imported.stdout.split()
    )
    result = run_hidden(tmp_path, hidden, [str(SCRIPTS / "fmn-daemon"), "replay", "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: fmn-daemon replay" in result.stdout


def test_importing_the_bot_plugin_without_limnoria_names_the_bot_extra(tmp_path: Path) -> None:
    probe = (
        "try:\n"
        "    import fmn_bot\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc, sep=': ')\n"
    )
    result = run_hidden(tmp_path, "supybot", [sys.executable, "-c", probe])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "MissingExtra: the Fmn plugin (fmn_bot) needs the 'bot' extra: pip install 'fmn[bot]'\n"
    )


def test_require_names_an_absent_module_and_lets_other_import_errors_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fmn_test_broken_extra.py").write_text(
        "import fmn_test_module_that_does_not_exist\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(extras.MODULES, "absent", ("fmn_test_absent_module",))
    monkeypatch.setitem(extras.MODULES, "broken", ("fmn_test_broken_extra",))
    with pytest.raises(MissingExtra) as missing:
        extras.require("absent", program="fmn-test")
    assert str(missing.value) == "fmn-test needs the 'absent' extra: pip install 'fmn[absent]'"
    assert isinstance(missing.value, ImportError)
    # Installed but broken inside is not "missing": the real error is shown.
    with pytest.raises(ModuleNotFoundError) as broken:
        extras.require("broken", program="fmn-test")
    assert not isinstance(broken.value, MissingExtra)
    assert broken.value.name == "fmn_test_module_that_does_not_exist"
    extras.require("tui", program="fmn-tui")  # installed here: no error


def test_the_base_install_has_no_front_end_dependencies() -> None:
    requirements = [Requirement(r) for r in importlib.metadata.requires("fmn") or []]
    base = {r.name.lower() for r in requirements if r.marker is None}
    by_extra: dict[str, set[str]] = {}
    for requirement in requirements:
        if requirement.marker is None:
            continue
        for extra in ("tui", "bot", "fas", "demo"):
            if requirement.marker.evaluate({"extra": extra}):
                by_extra.setdefault(extra, set()).add(requirement.name.lower())
    assert not base & {"textual", "limnoria", "aiosmtpd", "python-fedora"}
    assert {"sqlalchemy", "fedora-messaging", "apprise", "aiohttp"} <= base
    assert by_extra == {
        "tui": {"textual"},
        "bot": {"limnoria"},
        "fas": {"python-fedora"},
        "demo": {"aiosmtpd"},
    }


def test_every_package_has_the_one_version_from_the_metadata(tmp_path: Path) -> None:
    version = importlib.metadata.version("fmn")
    assert [p.__version__ for p in (fmn_core, fmn_daemon, fmn_tui)] == [version] * 3
    # fmn_bot in a subprocess: importing Limnoria outside a bot writes logs/ in the cwd.
    bot = subprocess.run(
        [sys.executable, "-c", "import fmn_bot; print('version', fmn_bot.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # (Limnoria logs its missing configuration to stdout too.)
    assert f"version {version}" in bot.stdout.splitlines(), bot.stdout + bot.stderr
