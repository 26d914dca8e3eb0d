"""The login handler hands kopf a session to the real apiserver with a bounded pool, from the
credentials kopf itself reads (here the control plane's kubeconfig, as on a laptop)."""

from __future__ import annotations

import asyncio
import logging

import kopf

from traindeploy import handlers


def test_kopf_gets_a_bounded_session_that_reaches_the_apiserver(control_plane, namespace):
    async def login_and_read() -> tuple[object, int, int]:
        context = await handlers.login(memo=kopf.Memo(namespaces=(namespace,)), settings=kopf.OperatorSettings(),
                                       logger=logging.getLogger("test"))
        session = context.aiohttp_session
        try:
            async with session.get(f"{context.server}/api/v1/namespaces/{namespace}") as response:
                return context, response.status, session.connector.limit
        finally:
            await session.close()

    context, status, limit = asyncio.run(login_and_read())
    assert isinstance(context, kopf.AiohttpSession)
    assert status == 200  # authenticated and trusted as kopf's own session would be
    assert limit == handlers.kopf_connections((namespace,))


def test_without_known_namespaces_kopf_keeps_its_own_session(control_plane):
    info = asyncio.run(handlers.login(memo=kopf.Memo(), settings=kopf.OperatorSettings(),
                                      logger=logging.getLogger("test")))
    assert isinstance(info, kopf.ConnectionInfo)
