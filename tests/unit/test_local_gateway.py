"""Route matching of the local API gateway: most specific route first, as API Gateway does."""

from infra.local.gateway import Gateway
from infra.local.runtime import Runtime
from infra.local.template import RouteSpec


def route(method: str, path: str, fn: str) -> RouteSpec:
    return RouteSpec("Api", "rest", "1.0", method, path, fn, "Prod")


def gateway(*routes: RouteSpec) -> Gateway:
    return Gateway(list(routes), Runtime({}, "us-east-1", "123456789012"), "us-east-1", "123456789012")


def test_static_path_beats_variable_which_beats_greedy_and_any() -> None:
    gw = gateway(
        route("ANY", "/ops/{proxy+}", "Proxy"),
        route("GET", "/ops/items/{id}", "Item"),
        route("GET", "/ops/items/summary", "Summary"),
        route("ANY", "/ops/items/{id}", "AnyItem"),
    )

    assert gw.match("GET", "/ops/items/summary")[0].function_id == "Summary"
    assert gw.match("GET", "/ops/items/7") == (gw.match("GET", "/ops/items/7")[0], {"id": "7"})
    assert gw.match("GET", "/ops/items/7")[0].function_id == "Item"
    assert gw.match("DELETE", "/ops/items/7")[0].function_id == "AnyItem"
    assert gw.match("POST", "/ops/a/b/c") == (gw.match("POST", "/ops/a/b/c")[0], {"proxy": "a/b/c"})
    assert gw.match("GET", "/other") is None


def test_default_route_catches_everything_else() -> None:
    gw = gateway(route("POST", "/v1/events", "Events"), route("ANY", "$default", "Default"))

    assert gw.match("POST", "/v1/events")[0].function_id == "Events"
    assert gw.match("GET", "/anything/else")[0].function_id == "Default"
