"""What koop-rs adds to the original API: mirror, options, typed errors, the GIL released,
Ctrl-C, documentation of every public name."""

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import koop
import koop.backend.conn
import koop.errors
import koop.metadata


def test_mirror_gets_every_kind_once_and_then_answers_from_the_cache(new_site, cache):
    site = new_site(300)
    ids = [1001, 1002, 1003, 1004, 1005]
    results = koop.mirror(ids + [1001], api_key=site.api_key, domain=site.domain, jobs=8)
    assert sorted(result.layer_id for result in results) == ids, "one result per distinct id"
    assert all(result.ok for result in results), results
    assert {result.outcome for result in results} == {"downloaded"}
    by_id = {result.layer_id: result for result in results}
    # Why each was exported in full rather than built from a changeset.
    assert "no earlier version" in by_id[1001].full_export_reason
    assert "grid layer has no changesets" in by_id[1003].full_export_reason
    assert by_id[1003].path.suffix == ".tif"  # the grid, as GeoTIFF
    gdalinfo = subprocess.run(["gdalinfo", str(by_id[1003].path)], capture_output=True, text=True)
    assert gdalinfo.returncode == 0, gdalinfo.stderr
    assert by_id[1004].path.suffix == ".vrt"  # the raster of 4 tiles, as a mosaic
    assert site.counters()["exports_created"] == len(ids)
    # Asked again: the catalog says nothing changed; one request, every layer from the cache.
    before = site.counters()
    again = koop.Koop(site.api_key, site.domain).mirror(ids)
    assert {result.outcome for result in again} == {"unchanged"}
    assert {result.full_export_reason for result in again} == {None}
    assert {r.layer_id: r.path for r in again} == {r.layer_id: r.path for r in results}
    assert site.counters()["api_requests"] - before["api_requests"] == 1
    # Layer by layer on request: a details request each, answered from the cache.
    each = koop.mirror(ids, api_key=site.api_key, domain=site.domain, every_layer=True)
    assert {result.outcome for result in each} == {"cached"}


def test_a_failed_layer_does_not_stop_the_others(site, cache):
    results = koop.mirror([1001, 999_999], api_key=site.api_key, domain=site.domain)
    by_id = {result.layer_id: result for result in results}
    assert by_id[1001].ok and by_id[1001].path.is_file()
    failed = by_id[999_999]
    assert not failed.ok and failed.path is None and failed.outcome is None
    assert isinstance(failed.error, koop.errors.NotFoundError)
    assert "999999" in str(failed.error)


def test_errors_are_typed_and_say_what_failed(site, cache):
    with pytest.raises(koop.errors.NotFoundError) as unknown:
        koop.get_layer_from_id(424242, api_key=site.api_key, domain=site.domain)
    assert isinstance(unknown.value, LookupError)
    assert "424242" in str(unknown.value)
    wrong_key = "not-the-key-0123456789abcdef"
    with pytest.raises(koop.errors.AuthenticationError) as refused:
        koop.get_layer_from_id(1001, api_key=wrong_key, domain=site.domain)
    assert "401" in str(refused.value)
    assert wrong_key not in str(refused.value), "the key never appears in an error"
    with pytest.raises(koop.errors.ConfigurationError):
        koop.Koop(site.api_key, "http://example.com")  # plain HTTP off loopback: refused
    with pytest.raises(koop.errors.ConfigurationError):
        koop.Koop(site.api_key, site.domain, crs="EPSG:abc")
    for name in koop.errors.__all__:
        assert issubclass(getattr(koop.errors, name), koop.errors.KoopError)


def test_offline_answers_from_the_cache_without_a_request(site, cache, requests_to):
    online = koop.Koop(site.api_key, site.domain)
    path = online.get_layer(1002)
    with requests_to() as made:
        assert koop.Koop(domain=site.domain, offline=True).get_layer(1002) == path
        with pytest.raises(koop.errors.NotCachedError):
            koop.Koop(domain=site.domain, offline=True).get_layer(1001)
    assert made["api_requests"] == 0


def test_options_reach_the_export(new_site, tmp_path):
    site = new_site(200)
    extent = {"type": "Polygon", "coordinates": [[[166, -48], [179, -48], [179, -34], [166, -34], [166, -48]]]}
    client = koop.Koop(
        site.api_key,
        site.domain,
        cache_dir=tmp_path / "elsewhere",
        crs="EPSG:4326",
        extent=extent,
        timeout=600,
    )
    assert client.cache_dir == tmp_path / "elsewhere"
    path = client.get_layer(1002)
    assert client.cache_dir in path.parents
    (export,) = site.exports()
    assert "4326" in str(export["crs"])
    assert export["extent"] == extent


def test_the_gil_is_released_while_koop_works(new_site, cache):
    site = new_site(1000)
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    start = time.monotonic()
    try:
        koop.get_layer_from_id(1002, api_key=site.api_key, domain=site.domain)
    finally:
        stop.set()
        counter.join()
    elapsed = time.monotonic() - start
    assert elapsed > 1.0, "the export takes 1 s"
    # A thread holding the GIL for the whole call would leave the counter near zero.
    assert ticks > elapsed * 100, (ticks, elapsed)


def test_threads_asking_for_one_layer_make_one_export(new_site, cache):
    site = new_site(500)
    client = koop.Koop(site.api_key, site.domain)
    paths = []
    threads = [
        threading.Thread(target=lambda: paths.append(client.get_layer(1005))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(paths) == 4 and len(set(paths)) == 1
    assert site.counters()["exports_created"] == 1


def test_ctrl_c_raises_keyboard_interrupt_and_cancels_the_export(new_site, tmp_path):
    slow_site = new_site(60_000)
    # Python raises KeyboardInterrupt on SIGINT only when it starts with SIGINT's default
    # disposition; a runner started in the background (`cmd &` without job control) ignores
    # SIGINT and its children inherit that, so the child installs the handler a terminal gives.
    script = textwrap.dedent(
        f"""
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import koop
        try:
            koop.get_layer_from_id(1001, api_key={slow_site.api_key!r}, domain={slow_site.domain!r})
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
        """
    )
    environment = dict(os.environ, KOOPCACHE_DIR=str(tmp_path / "cache"))
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while slow_site.counters()["exports_created"] == 0:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "no export started"
        time.sleep(0.05)
    interrupted_at = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=20)
    assert time.monotonic() - interrupted_at < 5, "Ctrl-C answered promptly"
    assert "interrupted" in out
    assert "KeyboardInterrupt" in err
    assert child.returncode != 0
    assert slow_site.counters()["export_cancels"] == 1, "the export was cancelled on the server"
    assert not list((tmp_path / "cache").rglob("*.gpkg")), "nothing half-made is filed"


def public_names():
    modules = [koop, koop.errors, koop.metadata, koop.backend.conn]
    for module in modules:
        assert module.__doc__, module.__name__
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)


def test_every_public_name_has_a_docstring_and_a_stub():
    stubs = (Path(koop.__file__).parent / "_koop.pyi").read_text()
    for qualified, value in public_names():
        if qualified.endswith("__version__") or inspect.ismodule(value):
            continue
        assert inspect.getdoc(value), qualified
        if inspect.isclass(value) and not issubclass(value, BaseException):
            assert f"class {value.__name__}" in stubs, qualified
            for member, attribute in vars(value).items():
                if member.startswith("_") or not callable(attribute):
                    continue
                assert inspect.getdoc(attribute), f"{qualified}.{member}"
                assert f"def {member}(" in stubs, f"{qualified}.{member}"
        elif callable(value) and not inspect.isclass(value):
            assert f"def {value.__name__}(" in stubs, qualified
    assert (Path(koop.__file__).parent / "py.typed").exists()
