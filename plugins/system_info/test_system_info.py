import os

from greffon.testing import check, run

HERE = os.path.dirname(os.path.abspath(__file__))


def test_it_loads_and_needs_no_permission():
    report = check(HERE)
    assert report["problems"] == []
    assert report["permissions"] == []
    assert report["schema"]["properties"]["only"]["items"]["enum"][0] == "os"


def test_only_the_sections_asked_for_come_back():
    answer = run(HERE, only=["python", "cpu"])
    assert sorted(answer) == ["cpu", "python"]
    assert answer["cpu"]["cores"] >= 1


def test_an_unknown_section_is_refused_before_the_plugin_runs():
    answer = run(HERE, only=["secrets"])
    assert "invalid arguments" in answer["error"]
    assert "only" in answer["error"]
