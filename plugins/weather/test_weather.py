import os

from greffon.testing import check, load, load_module, run

HERE = os.path.dirname(os.path.abspath(__file__))


def test_wmo_codes_are_described_in_french_and_english():
    weather = load_module(HERE)
    assert weather.describe(0, "fr") == "Ciel dégagé"
    assert weather.describe(0, "en") == "Clear sky"
    assert weather.describe(1234, "en") == "weather code 1234"


def test_it_declares_the_network_and_the_open_meteo_hosts_only():
    report = check(HERE)
    assert report["problems"] == []
    assert report["permissions"] == ["net", "fs_read"]
    assert report["schema"]["properties"]["days"]["maximum"] == 16


def test_more_than_16_days_is_refused_naming_the_field_and_rule():
    answer = run(HERE, city="Paris", days=20)
    assert "argument 'days'" in answer["error"]
    assert "maximum" in answer["error"]


def test_a_place_is_required_and_the_plugin_says_so():
    # Checked by the plugin itself (the schema cannot say "one or the
    # other"), in a real sandboxed worker, before any request.
    assert run(HERE) == {"error": "give a city, or both latitude and longitude"}
    assert load(HERE).run(city="  ") == {"error": "city must not be blank"}
