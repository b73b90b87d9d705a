"""A site's model loader and the weights it waits for: weights pushed again are the ones waited for; weights
removed while it waits let the model load as before (it is never left placed and not loading)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from edgeplane.fabric import FabricNode, ObjectStore, build_manifest
from edgeplane.fleet import load_fleet
from edgeplane.planning import fabric_links
from edgeplane.site import ModelLoader, SiteOptions
from tests._time import wait_for_async
from tests.conftest import SMALL_FLEET


async def test_weights_pushed_again_are_waited_for_and_weights_removed_are_not(tmp_path: Path) -> None:
    fleet = load_fleet(SMALL_FLEET)
    store = ObjectStore(tmp_path / "fabric")
    node = FabricNode("iad1", store, fabric_links(fleet), pops=list(fleet.pop_by_code))
    loader = ModelLoader(fleet, "iad1", SiteOptions(time_scale=0.0), CollectorRegistry(), node)

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x" * 9000)
    manifest = build_manifest(weights, "tiny-chat", 4096)
    loader.weights = {"tiny-chat": "0" * 64}  # not here
    waiting = asyncio.create_task(loader.load("tiny-chat", 1))
    await wait_for_async("the loader waits", lambda: loader.waiting is not None)
    loader.weights = {"tiny-chat": manifest.sha256}  # pushed again: these now
    await wait_for_async("it waits for the new ones", lambda: (loader.waiting or {}).get("sha256") == manifest.sha256)
    store.add(manifest)
    for index in range(manifest.chunk_count):
        offset, length = manifest.chunk_range(index)
        store.put_chunk(manifest.sha256, index, weights.read_bytes()[offset : offset + length])
    backend = await asyncio.wait_for(waiting, 10)
    assert backend is not None and loader.waiting is None
    await backend.stop()

    loader.weights = {"tiny-llama": "1" * 64}
    waiting = asyncio.create_task(loader.load("tiny-llama", 1))
    await wait_for_async("the loader waits", lambda: loader.waiting is not None)
    loader.weights = {}  # removed (fabric rm): it loads as it did before weights travelled
    backend = await asyncio.wait_for(waiting, 10)
    assert backend is not None
    await backend.stop()

    loader.weights = {"tiny-llama": "1" * 64}
    waiting = asyncio.create_task(loader.load("tiny-llama", 1, wanted=lambda: False))  # placed elsewhere meanwhile
    assert await asyncio.wait_for(waiting, 10) is None
    await node.close()
