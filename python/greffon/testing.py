"""Testing a plugin from pytest.

Two ways in, for two kinds of test:

- ``load(folder)`` imports ``plugin.py`` in the test's own process and
  returns the plugin object (``start()`` already run), ``load_module``
  the module: fast, for the plugin's own logic. Host services (``greffon.http``, ``greffon.tasks``,
  ...) raise ``greffon.NotInWorker`` there.
- ``run(folder, **args)`` runs the plugin as greffon runs it: a throwaway
  home holding only this plugin, enabled (its declared permissions
  granted), and one call through the real host — the schema checked, a
  sandboxed worker, the answer (the result, or ``{"error": ...}``)
  returned as greffon's CLI prints it. ``check(folder)`` reports what
  ``greffon plugin check`` finds: problems and the normalized schema.

``run`` and ``check`` need the greffon binary: ``$GREFFON_BIN``, else
``greffon`` on ``PATH``. Each call starts a fresh home, so tests do not
share state; pass ``toml`` (the text of a ``greffon.toml``) to configure
it, e.g. ``[plugins.weather.config]`` pointing at a local fake server.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

__all__ = ["GreffonMissing", "check", "load", "load_module", "run"]


class GreffonMissing(RuntimeError):
    """The greffon binary was not found ($GREFFON_BIN, PATH)."""


def load_module(folder):
    """Imports ``folder/plugin.py`` in this process and returns the module
    (for the plugin's own helper functions)."""
    path = os.path.join(os.path.abspath(folder), "plugin.py")
    name = "greffon_testing_" + os.path.basename(os.path.dirname(path)).replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load(folder):
    """Imports ``folder/plugin.py`` in this process and returns its
    ``plugin`` object, with ``start()`` run when it has one. Nothing
    checks the arguments of a direct ``plugin.run(...)``: use ``run`` for
    that."""
    plugin = load_module(folder).plugin
    if callable(getattr(plugin, "start", None)):
        plugin.start()
    return plugin


def run(folder, toml=None, **args):
    """One call of the plugin in ``folder`` through a real greffon host;
    answers what ``greffon plugin run`` prints (a result, or
    ``{"error": "..."}`` naming the plugin, the field and the rule)."""
    with _home(folder, toml) as (home, name):
        name = _declared_name(home, name)
        _greffon(home, "plugin", "enable", name)
        out = _greffon(home, "plugin", "run", name, "--json", json.dumps(args), ok=(0, 1))
        return json.loads(out)


def check(folder):
    """What ``greffon plugin check`` finds: ``problems`` (empty when the
    plugin loads), ``findings`` (each problem with its ``fix``),
    ``schema`` (the normalized JSON Schema), ``permissions``."""
    with _home(folder, None) as (home, name):
        out = _greffon(home, "plugin", "check", name, "--json", ok=(0, 1))
        return json.loads(out)


def _declared_name(home, folder):
    """The name the plugin in ``folder`` declares (the registry's key),
    or why it does not load."""
    for entry in json.loads(_greffon(home, "plugin", "list", "--json")):
        if entry.get("folder") == folder:
            if entry.get("state") == "failed":
                raise AssertionError(f"plugin {folder} does not load: {entry.get('failure')}")
            return entry["name"]
    raise AssertionError(f"no plugin found in {folder}")


class _home:
    """A throwaway greffon home holding a copy of one plugin folder."""

    def __init__(self, folder, toml):
        self.folder = os.path.abspath(folder)
        self.toml = toml

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="greffon-testing-")
        name = os.path.basename(self.folder)
        shutil.copytree(
            self.folder,
            os.path.join(self.tmp, "plugins", name),
            ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"),
        )
        if self.toml is not None:
            with open(os.path.join(self.tmp, "greffon.toml"), "w") as f:
                f.write(self.toml)
        return self.tmp, name

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)


def _greffon(home, *args, ok=(0,)):
    binary = os.environ.get("GREFFON_BIN") or shutil.which("greffon")
    if not binary:
        raise GreffonMissing("greffon.testing needs the greffon binary: set GREFFON_BIN or put greffon on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("GREFFON_HOME", "GREFFON_TOKEN")}
    done = subprocess.run(
        [binary, "--home", home, "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode not in ok:
        raise AssertionError(f"greffon {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done.stdout
