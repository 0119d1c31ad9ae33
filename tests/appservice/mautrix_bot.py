"""A small Matrix bot built on mautrix-python's application-service library (PyPI `mautrix`),
run by tests/it/appservice_mautrix.rs against the real node.

It registers as the application service `mbot` (users `@mbot_.*`, aliases `#mbot_.*`):
- an alias query for `#mbot_<name>` creates a public portal room with that alias;
- a text message in a room it is in, from a user outside its namespace, is answered by the
  namespaced user `@mbot_echo` with "echo: <text>" (registered and joined on demand).

It prints one line per thing it did, for the test to follow, and "READY" once it listens.
"""

import argparse
import asyncio
import logging
import sys

from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import EventType, MessageEvent, RoomAlias, RoomCreatePreset, UserID


def say(*parts: str) -> None:
    print(*parts, flush=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--as-token", required=True)
    p.add_argument("--hs-token", required=True)
    p.add_argument("--state", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    appserv = AppService(
        server=args.node,
        domain=args.domain,
        as_token=args.as_token,
        hs_token=args.hs_token,
        bot_localpart="mbotbot",
        id="mbot",
        state_store=FileASStateStore(path=args.state, binary=False),
    )
    echo_id = UserID(f"@mbot_echo:{args.domain}")

    async def query_alias(alias: RoomAlias) -> dict:
        localpart = alias[1:].split(":", 1)[0]
        if not localpart.startswith("mbot_"):
            return {}
        await appserv.intent.ensure_registered()
        room_id = await appserv.intent.create_room(
            alias_localpart=localpart, name=f"portal {localpart}", preset=RoomCreatePreset.PUBLIC
        )
        say("portal", alias, room_id)
        return {"room_id": room_id}

    appserv.query_alias = query_alias

    @appserv.matrix_event_handler
    async def on_event(event) -> None:
        if not isinstance(event, MessageEvent) or event.type != EventType.ROOM_MESSAGE:
            return
        if event.sender.startswith("@mbot"):
            return
        echo = appserv.intent.user(echo_id)
        await echo.ensure_registered()
        await echo.ensure_joined(event.room_id)
        reply = await echo.send_text(event.room_id, f"echo: {event.content.body}")
        say("echoed", event.room_id, event.event_id, reply)

    await appserv.start(host="127.0.0.1", port=args.port)
    say("READY")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
