"""The product store on the real MongoDB-protocol server: lists of ids go to MongoDB in bounded ``$in`` lists.

The local server checks every document a ``$in`` finds against the whole list, so one ``$in`` of m ids costs m² (a
sync deleting 8,000 products took 99 s, 200,000 would take hours); a real MongoDB refuses a command over 16 MB.
"""

from __future__ import annotations

from pymongo import MongoClient, monitoring

from pipeline.storage.catalog_store import IN_CHUNK, CatalogStore

N = 7 * IN_CHUNK + 3  # several full lists and a short one


class InLists(monitoring.CommandListener):
    """The length of every ``$in`` list each command sent to the server held, by command name."""

    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        for found in _in_lists(event.command):
            self.sizes.setdefault(event.command_name, []).append(len(found))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def _in_lists(value) -> list[list]:
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in ([item] if key == "$in" else _in_lists(item))]
    if isinstance(value, list):
        return [found for item in value for found in _in_lists(item)]
    return []


def test_long_id_lists_go_to_mongodb_in_bounded_in_lists(mongo_uri):
    listener = InLists()
    client = MongoClient(mongo_uri, event_listeners=[listener])
    store = CatalogStore(client)
    ids = [f"p{i:05d}" for i in range(N)]
    try:
        store.upsert_many([{"id": pid, "name": f"Name {pid}", "image_files": [f"ab/{pid}.jpg"]} for pid in ids])
        wanted = [*ids[::-1], "unknown-1", "unknown-2"]

        got = store.get_many(wanted)
        assert sorted(got) == ids and got["p00007"] == {
            "id": "p00007",
            "name": "Name p00007",
            "image_files": ["ab/p00007.jpg"],
        }
        keys = [f"ab/{pid}.jpg" for pid in ids[: N - 10]] + ["cd/nobody.jpg"]
        assert store.photos_in_use(keys) == set(keys[:-1])
        assert store.delete_many([*ids[: N - 10], "unknown-1"]) == N - 10
        assert sorted(store.get_many(ids)) == ids[N - 10 :], "the rest is still there"

        for command in ("find", "distinct", "delete"):
            sizes = listener.sizes[command]
            assert max(sizes) <= IN_CHUNK and len(sizes) > 1, (command, sizes)
        assert sum(listener.sizes["delete"]) == N - 10 + 1, "every id asked for once"
        store.get_many(ids[:10])
        assert listener.sizes["find"][-1] == 10, "a query's answer is still one round trip"
    finally:
        client.close()
