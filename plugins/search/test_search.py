import os

from greffon.testing import load, load_module, run

HERE = os.path.dirname(os.path.abspath(__file__))


def test_result_links_are_unwrapped_and_ads_recognized():
    search = load_module(HERE)
    wrapped = "//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust-lang.org%2F&rut=abc"
    assert search.target_url(wrapped) == "https://www.rust-lang.org/"
    assert search.is_ad_link("https://duckduckgo.com/y.js?ad_domain=example.com")
    assert not search.is_ad_link(wrapped)


def test_an_empty_query_is_refused_by_the_schema_a_blank_one_by_the_plugin():
    assert "argument 'query'" in run(HERE, query="")["error"]
    assert load(HERE).run(query="   ") == {"error": "query must not be blank"}
