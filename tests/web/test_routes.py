"""Route templates, matched as Azure Functions (ASP.NET Core routing) matches them."""

from __future__ import annotations

import pytest

from dfhost.web.route_templates import RouteTemplateError, parse_template


def match(template: str, path: str) -> dict[str, str] | None:
    return parse_template(template).match(path)


def test_literals_match_case_insensitively_and_ignore_one_trailing_slash() -> None:
    assert match("api/hello", "/api/hello") == {}
    assert match("api/hello", "/API/Hello/") == {}
    assert match("api/hello", "/api/hello/x") is None
    assert match("api/hello", "/api") is None
    assert match("/api/hello/", "api/hello") == {}


def test_empty_template_matches_only_the_root() -> None:
    assert match("", "/") == {}
    assert match("", "") == {}
    assert match("", "/x") is None


def test_parameters_capture_one_decoded_segment() -> None:
    assert match("orchestrators/{functionName}", "/orchestrators/Hello") == {
        "functionName": "Hello"
    }
    assert match("items/{id}", "/items/a%20b%2Fc") == {"id": "a b/c"}
    assert match("items/{id}", "/items/") is None
    assert match("items/{id}", "/items/a/b") is None


def test_optional_parameters_and_defaults() -> None:
    t = parse_template("inspect/{id:int}/{rest?}")
    assert t.match("/inspect/1") == {"id": "1"}
    assert t.match("/inspect/1/more") == {"id": "1", "rest": "more"}
    assert t.match("/inspect/x/more") is None
    t = parse_template("page/{n:int=5}")
    assert t.match("/page") == {"n": "5"}
    assert t.match("/page/7") == {"n": "7"}
    assert t.match("/page/seven") is None


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        ("int", ["0", "-12", "2147483647"], ["1.5", "x", "2147483648"]),
        ("long", ["9223372036854775807"], ["9223372036854775808", "1e3"]),
        ("alpha", ["abc", "ABC"], ["ab1", "é"]),
        ("bool", ["true", "False"], ["yes", "1"]),
        (
            "guid",
            ["6f9619ff-8b86-d011-b42d-00cf4fc964ff", "6F9619FF8B86D011B42D00CF4FC964FF"],
            ["6f9619ff", "not-a-guid"],
        ),
        ("double", ["1.5", "-2", "3e10", ".5"], ["1.5.1", "abc"]),
        ("float", ["1.5"], ["x"]),
        ("decimal", ["1.25", "-3"], ["1e3", "x"]),
        ("datetime", ["2024-01-01", "2024-01-01T10:00:00"], ["tomorrow", "2024-13-01"]),
        ("min(10)", ["10", "11"], ["9", "x"]),
        ("max(10)", ["10", "-1"], ["11"]),
        ("range(1,3)", ["1", "3"], ["0", "4"]),
        ("minlength(2)", ["ab"], ["a"]),
        ("maxlength(2)", ["ab"], ["abc"]),
        ("length(2)", ["ab"], ["a", "abc"]),
        ("length(1,2)", ["a", "ab"], ["abc"]),
        ("regex(^[a-c]+$)", ["abc", "ABC"], ["abd"]),
    ],
)
def test_constraints_reject_values_with_no_match(
    constraint: str, good: list[str], bad: list[str]
) -> None:
    t = parse_template(f"v/{{x:{constraint}}}")
    for value in good:
        assert t.match(f"/v/{value}") == {"x": value}, value
    for value in bad:
        assert t.match(f"/v/{value}") is None, value


def test_chained_constraints_all_apply() -> None:
    t = parse_template("v/{x:int:min(1):max(5)}")
    assert t.match("/v/3") == {"x": "3"}
    assert t.match("/v/0") is None
    assert t.match("/v/a") is None


def test_catch_all_takes_the_rest_of_the_path() -> None:
    t = parse_template("files/{*path}")
    assert t.match("/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert t.match("/files/a%20b/c") == {"path": "a b/c"}
    assert t.match("/files") == {}
    assert parse_template("files/{**path}").match("/files/x/y") == {"path": "x/y"}


def test_complex_segments_mix_literals_and_parameters() -> None:
    t = parse_template("docs/{name}.{ext}")
    assert t.match("/docs/report.final.pdf") == {"name": "report", "ext": "final.pdf"}
    assert t.match("/docs/readme") is None
    assert parse_template("v{major:int}/x").match("/v2/x") == {"major": "2"}
    assert parse_template("v{major:int}/x").match("/vtwo/x") is None


def test_regex_constraint_may_contain_slashes_and_escaped_braces() -> None:
    t = parse_template(r"zip/{code:regex(^\d{{5}}$)}")
    assert t.match("/zip/12345") == {"code": "12345"}
    assert t.match("/zip/1234") is None
    assert parse_template("r/{x:regex(a/b|c)}").match("/r/c") == {"x": "c"}


@pytest.mark.parametrize(
    "template",
    [
        "a/{x:nope}",
        "a/{x",
        "a/x}",
        "a/{*rest}/b",
        "a/{x?}/b",
        "a/{x}/{x}",
        "a/{x}{y}",
        "a//b",
        "a/{}",
        "a/{x:min(one)}",
        "a/{x:regex([)}",
    ],
)
def test_invalid_templates_are_refused(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        parse_template(template)


def test_precedence_orders_specific_routes_first() -> None:
    templates = ["api/{*rest}", "api/{name}", "api/{id:int}", "api/{a}.{b}", "api/hello"]
    ordered = sorted(templates, key=lambda t: parse_template(t).precedence)
    assert ordered == ["api/hello", "api/{a}.{b}", "api/{id:int}", "api/{name}", "api/{*rest}"]


def test_parameter_names_are_listed_in_order() -> None:
    assert parse_template("a/{x:int}/{y?}").parameter_names == ("x", "y")
