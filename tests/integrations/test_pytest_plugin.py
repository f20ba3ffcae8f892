"""The pytest plugin, used the way users use it: test modules run by pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


@pytest.fixture
def tester(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_sync_openai_sdk_sees_midstream_reset(tester: pytest.Pytester) -> None:
    """A sync test drives the openai SDK through chaos_proxy and checks verdicts on the cut."""
    tester.makepyfile(
        """
        import openai
        import pytest
        from chaosstream.integrations.pytest_plugin import assert_verdicts

        def test_cut(chaos_proxy):
            proxy = chaos_proxy("midstream-reset")
            client = openai.OpenAI(base_url=proxy.openai_base_url, api_key="k", max_retries=0)
            text, error = "", None
            try:
                stream = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
            except (openai.APIError, Exception) as e:
                error = e
            finally:
                client.close()
            assert error is not None
            assert [f.type for f in proxy.fault_log] == ["disconnect"]
            [ex] = proxy.exchanges
            assert ex.outcome == "fault"
            assert_verdicts(proxy, surfaces_error=True, completes=False, retries=False,
                            text=text, error=error)
            with pytest.raises(AssertionError, match="retries: expected pass, got fail"):
                assert_verdicts(proxy, retries=True)
        """
    )
    result = tester.runpytest()
    result.assert_outcomes(passed=1)


def test_marker_parametrizes_over_profiles(tester: pytest.Pytester) -> None:
    """@pytest.mark.chaos_profile runs the test once per profile, and chaos_proxy() uses it."""
    tester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos_profile("clean", "midstream-close")
        def test_each(chaos_proxy, chaos_profile):
            proxy = chaos_proxy()
            assert proxy.profile.name == chaos_profile
            assert proxy.seed == 7
            assert proxy.url.startswith("http://127.0.0.1:")
            assert proxy.openai_base_url == proxy.url + "/v1"
        """
    )
    result = tester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_each?clean? PASSED*", "*test_each?midstream-close? PASSED*"]
    )


def test_async_test_retries_after_cut(tester: pytest.Pytester) -> None:
    """An async test (pytest-asyncio) with a retrying aiohttp client gets a 'retries' pass."""
    tester.makepyfile(
        """
        import aiohttp
        from chaosstream.integrations.pytest_plugin import assert_verdicts

        BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

        async def test_retry(chaos_proxy):
            proxy = chaos_proxy("midstream-reset", seed=3)
            text = ""
            async with aiohttp.ClientSession() as http:
                for attempt in range(3):
                    try:
                        url = proxy.openai_base_url + "/chat/completions"
                        async with http.post(url, json=BODY) as resp:
                            body = await resp.read()
                        if b"[DONE]" in body:
                            text = "done"
                            break
                    except aiohttp.ClientPayloadError:
                        continue
            assert text == "done"
            assert [e.outcome for e in proxy.exchanges] == ["fault", "complete"]
            assert_verdicts(proxy, retries={"max_attempts": 3}, falls_back=False)
        """
    )
    result = tester.runpytest()
    result.assert_outcomes(passed=1)


def test_set_profile_reset_and_inline_profiles(tester: pytest.Pytester) -> None:
    """set_profile takes an inline mapping; reset clears counters and exchanges."""
    tester.makepyfile(
        """
        import urllib.request
        import json

        BODY = json.dumps({"model": "m", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()

        def post(proxy):
            req = urllib.request.Request(proxy.openai_base_url + "/chat/completions", data=BODY,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    resp.read()
                    return resp.status
            except urllib.error.HTTPError as e:
                return e.code

        def test_switch(chaos_proxy, chaos_mock):
            proxy = chaos_proxy("clean")
            assert post(proxy) == 200
            proxy.set_profile({"version": 1, "name": "refuse", "faults": [
                {"type": "http_error", "status": 503, "requests": [1]}]}, seed=5)
            assert post(proxy) == 503
            assert post(proxy) == 200
            assert [e.status for e in proxy.exchanges] == [200, 503, 200]
            proxy.reset()
            assert proxy.exchanges == [] and proxy.fault_log == []
            assert post(proxy) == 503
            assert len(chaos_mock.requests) == 2
        """
    )
    result = tester.runpytest()
    result.assert_outcomes(passed=1)


def test_marker_without_fixture_is_a_usage_error(tester: pytest.Pytester) -> None:
    """The marker on a test that uses no chaos fixture fails collection with a clear message."""
    tester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos_profile("clean")
        def test_nothing():
            pass
        """
    )
    result = tester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*chaos_profile needs the test to use the chaos_proxy*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*_hooks.py*")


def test_upstream_argument_skips_the_mock(tester: pytest.Pytester) -> None:
    """upstream= forwards there; the default is mobile-lossy; a bad name fails as in the CLI."""
    tester.makepyfile(
        """
        import pytest
        from chaosstream.yamlfile import InputError

        def test_upstream(chaos_proxy, chaos_mock):
            proxy = chaos_proxy("clean", upstream=chaos_mock.url)
            assert proxy.mock is None and proxy.proxy.upstream.port == chaos_mock.port
            assert chaos_proxy().profile.name == "mobile-lossy"  # the documented default
            with pytest.raises(InputError, match="unknown profile 'nope'"):
                chaos_proxy("nope")
        """
    )
    result = tester.runpytest()
    result.assert_outcomes(passed=1)


def test_example_module_passes(tester: pytest.Pytester) -> None:
    """examples/test_with_chaos_proxy.py (official openai SDK) passes as shipped."""
    example = Path(__file__).resolve().parents[2] / "examples" / "test_with_chaos_proxy.py"
    tester.makepyfile(test_example=example.read_text())
    result = tester.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_client_completes_under_chaos?midstream-close? PASSED*"])
