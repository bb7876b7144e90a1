import os

import pytest

import greffon
from greffon import testing

SYSTEM_INFO = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "system_info")


def test_run_without_the_binary_says_how_to_provide_it(monkeypatch):
    monkeypatch.setenv("GREFFON_BIN", "")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(testing.GreffonMissing, match="GREFFON_BIN"):
        testing.run(SYSTEM_INFO)


def test_load_runs_start_and_leaves_host_services_out(tmp_path):
    (tmp_path / "plugin.py").write_text(
        "import greffon\n\n\nclass Plugin:\n"
        "    meta = {'name': 'p'}\n\n"
        "    def start(self):\n        self.started = True\n\n"
        "    def run(self):\n        return greffon.system.info()\n\n\nplugin = Plugin()\n"
    )
    plugin = testing.load(tmp_path)
    assert plugin.started
    with pytest.raises(greffon.NotInWorker, match="only available inside a greffon worker"):
        plugin.run()


@pytest.mark.skipif(not os.environ.get("GREFFON_BIN"), reason="needs the greffon binary (scripts/test sets GREFFON_BIN)")
def test_a_plugin_that_does_not_load_is_named_with_why(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "plugin.py").write_text("class Plugin:\n    meta = {'name': 'broken'}\n\nplugin = Plugin()\n")
    with pytest.raises(AssertionError, match="plugin broken does not load: .*run\\(\\)"):
        testing.run(folder)
    report = testing.check(folder)
    assert any("run()" in p for p in report["problems"])
    assert any("def run(self, **kwargs)" in (f["fix"] or "") for f in report["findings"])
