"""The seams of the four packages, read from their source with ``ast``.

Class names are unique across fmn_core, fmn_daemon, fmn_bot and fmn_tui (a name
says what it is, so a reader never has to ask which ``Delivery`` is meant), and no
module reaches into another fmn module's ``_private`` names: what two modules
share is public in one of them. And a process imports a module it may never use
only when it first uses it (checked in a fresh interpreter).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fmn_core", "fmn_daemon", "fmn_bot", "fmn_tui")


def _modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(relative.parts).removesuffix(".__init__")
            found.append((name, path, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _source(own: str, node: ast.ImportFrom) -> str:
    """The module an ``import from`` reads, relative levels resolved against package ``own``."""
    if not node.level:
        return node.module or ""
    parts = own.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def test_seams_class_names_are_unique_across_the_packages() -> None:
    where: defaultdict[str, list[str]] = defaultdict(list)
    for module, _path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(module)
    shared = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert not shared, f"classes sharing a name: {shared}"


def test_seams_no_module_imports_another_modules_private_names() -> None:
    reaching: list[str] = []
    for module, path, tree in _modules():
        # A package's __init__ resolves relative imports from the package itself.
        own = module if path.name == "__init__.py" else module.rpartition(".")[0]
        fmn_modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _source(own, node)
                if source.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    if _is_private(alias.name):
                        reaching.append(f"{module} imports {alias.name} from {source}")
                    fmn_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        fmn_modules.add((alias.asname or alias.name).split(".")[0])
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in fmn_modules
                and _is_private(node.attr)
            ):
                reaching.append(f"{module} uses {node.value.id}.{node.attr}")
    assert not reaching, "\n".join(reaching)


def test_seams_the_checks_see_what_they_look_for() -> None:
    # The walk finds the packages' classes and imports at all (a check over nothing passes).
    modules = _modules()
    assert len(modules) > 80
    names = {
        node.name
        for _, _, tree in modules
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    assert {"Matcher", "Senders", "IrcSender", "AmqpDelivery", "StoredMessage"} <= names


def _probe(script: str) -> list[str]:
    """What ``script`` prints, run in a fresh interpreter (nothing imported yet)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_package_loads_its_public_modules_when_first_used() -> None:
    # A consumer holds only what it runs: the gateway, the preferences editor and
    # the imports and exports load when a front end first asks for them.
    probe = (
        "import sys\n"
        "import fmn_core, fmn_daemon.cli, fmn_daemon.service\n"
        "idle = ('fmn_core.gateway', 'fmn_core.gateway_serving', 'fmn_core.preferences',\n"
        "        'fmn_core.portability', 'fmn_core.templates')\n"
        "print(sorted(m for m in idle if m in sys.modules))\n"
        "print(fmn_core.gateway.__name__, fmn_core.portability.__name__)\n"
        "from fmn_core import preferences\n"
        "print(preferences.__name__ in sys.modules)\n"
        "try:\n"
        "    fmn_core.no_such_module\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    assert _probe(probe) == [
        "[]",
        "fmn_core.gateway fmn_core.portability",
        "True",
        "module 'fmn_core' has no attribute 'no_such_module'",
    ]


def test_senders_and_http_load_feeds_apprise_and_matrix_when_first_used() -> None:
    # feedgen and lxml (~4 MiB), Apprise (~2 MiB) and the Matrix client (~1 MiB) are
    # imported by the first feed, the first push send and a configured Matrix bot;
    # a daemon whose users use none of them never holds them.
    probe = (
        "import sys\n"
        "import fmn_daemon.cli, fmn_daemon.service, fmn_daemon.delivery, fmn_daemon.http\n"
        "from fmn_core.config import Config, MatrixConfig\n"
        "from fmn_daemon.transports import build_transports\n"
        "from fmn_daemon.transports.live import LiveHub\n"
        "idle = ('feedgen', 'lxml', 'apprise', 'fmn_daemon.transports._apprise',\n"
        "        'fmn_daemon.transports.matrix')\n"
        "config = Config()\n"
        "transports = build_transports(config, LiveHub())\n"
        "print(sorted(m for m in idle if m in sys.modules))\n"
        "from fmn_daemon.transports.feed import build_feed\n"
        "feed = build_feed('alice', [], feed_url='https://fmn.example.org/feeds/t.atom',\n"
        "                  kind='atom')\n"
        "print(b'<feed' in feed, sorted(m for m in ('feedgen', 'lxml') if m in sys.modules))\n"
        "from fmn_daemon.transports.push import plugin_for\n"
        "plugin = plugin_for('ntfys://ntfy.example.org/topic')\n"
        "print(plugin is not None, 'apprise' in sys.modules)\n"
        "bot = config.replace(matrix=MatrixConfig(homeserver_url='https://matrix.example.org',\n"
        "                                         user_id='@fmn:example.org', access_token='t'))\n"
        "print(type(build_transports(bot)['matrix']).__name__)\n"
    )
    assert _probe(probe) == [
        "[]",
        "True ['feedgen', 'lxml']",
        "True True",
        "MatrixTransport",
    ]
