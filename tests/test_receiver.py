"""Exactly one receiver of Telegram's updates: two real ``optobot run`` on PostgreSQL and Redis, polling or behind
one webhook — no 409, every update handled once in its chat's order, the receiver killed (kill -9) and replaced
within seconds with nothing lost, a buyer mid-quiz carried on by the other instance."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bot.catalog.render import CatalogRenderer
from bot.config import PROJECT_DIR
from bot.db.models import Message, TgUpdate
from bot.db.session import open_database
from bot import receiver
from bot.receiver import AdvisoryLock, FileLock
from bot.sandbox.balancer import Balancer, free_port
from bot.sandbox.telegram import TelegramSandbox
from tests.buyer import Buyer
from tests.conftest import REDIS_URL, SECRET, TOKEN, make_settings, running
from tests.test_inbox_crash import greetings, until
from tests.test_cli import environment

BUYERS = 12
MESSAGES = 8  # each after its /start
TAKE_OVER = 10.0  # seconds within which another instance receives once the receiver is killed


class Instance:
    """One ``optobot run`` in a process group of its own (a kill takes its render workers too), logging to a file."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.env = {**environment(tmp_path, **env), "BOT_TOKEN": TOKEN, "WEBHOOK_SECRET": SECRET, "HTTP_PORT": str(self.port),
                    "DATA_DIR": str(self.dir), "REPORT_SCHEDULE": "off", "LOG_LEVEL": "INFO", "PYTHONPATH": str(PROJECT_DIR)}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Instance:
        with open(self.dir / "log", "wb") as log:
            self.process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=self.dir, env=self.env,
                                                                stdout=log, stderr=log, start_new_session=True)
        return self

    @property
    def log(self) -> str:
        return (self.dir / "log").read_text(errors="replace")

    async def receiving(self) -> bool | None:
        """Whether it is the elected receiver (its metric); ``None`` while it does not answer."""
        assert self.process is not None and self.process.returncode is None, f"optobot run exited:\n{self.log[-3000:]}"
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)).text
        except httpx.HTTPError:
            return None
        return "optobot_update_receiver 1.0" in text

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 40)
            except TimeoutError:
                self.kill()
                await self.process.wait()


async def elected(instances: list[Instance]) -> Instance:
    """The one receiver among ``instances``, once every one of them answers (and never two)."""
    found: list[Instance] = []

    async def one_receives() -> bool:
        answers = [await instance.receiving() for instance in instances]
        assert answers.count(True) <= 1, "two receivers"
        found[:] = [instance for instance, answer in zip(instances, answers) if answer]
        return None not in answers and len(found) == 1

    await until(one_receives, 120, "one instance to be elected receiver")
    return found[0]


async def delivered(sandbox: TelegramSandbox) -> bool:
    return sandbox.pending_updates == 0


async def webhook_set_twice(sandbox: TelegramSandbox) -> bool:
    return sum(call.method == "setWebhook" for call in sandbox.calls) == 2


def converse(buyers: list[Buyer], first: int, last: int) -> None:
    for number in range(first, last):
        for buyer in buyers:
            buyer.send(f"сообщение {number}")


async def first_half(sandbox: TelegramSandbox, first_user: int) -> list[Buyer]:
    """:data:`BUYERS` buyers: each ``/start`` and half of their messages, taken from the sandbox."""
    buyers = [Buyer(sandbox, user_id=first_user + index, first_name=f"Покупатель{index}") for index in range(BUYERS)]
    for buyer in buyers:
        buyer.send("/start")
    converse(buyers, 0, MESSAGES // 2)
    await until(lambda: delivered(sandbox), 60, "the first half to be taken")
    return buyers


async def logged_in_order(database_url: str, buyers: list[Buyer], messages: int) -> None:
    """Every buyer message logged once, each chat's in the order it was written."""
    db = open_database(database_url)
    chats = [buyer.id for buyer in buyers]
    try:
        async def all_logged() -> bool:
            async with db() as session:
                rows = (await session.execute(select(Message.id).where(Message.direction == "in", Message.tg_chat_id.in_(chats)))).all()
            return len(rows) >= len(buyers) * (messages + 1)

        await until(all_logged, 120, "every buyer message to be handled")
        async with db() as session:
            rows = (await session.execute(select(Message.tg_chat_id, Message.tg_message_id, Message.text)
                                          .where(Message.direction == "in", Message.tg_chat_id.in_(chats)).order_by(Message.id))).all()
    finally:
        await db.close()
    logged: dict[int, list[int]] = defaultdict(list)
    for chat_id, message_id, _ in rows:
        logged[chat_id].append(message_id)
    assert len(rows) == len(buyers) * (messages + 1), f"{len(rows)} logged"
    for buyer in buyers:
        assert len(set(logged[buyer.id])) == messages + 1, (buyer.id, logged[buyer.id])
        assert logged[buyer.id] == sorted(logged[buyer.id]), (buyer.id, logged[buyer.id])  # handled in the order written


def conflicts(sandbox: TelegramSandbox, before: float = float("inf")) -> tuple[int, int]:
    """409s answered to ``getUpdates`` calls begun before ``before``, and after."""
    calls = [call for call in sandbox.calls if call.method == "getUpdates" and call.error_code == 409]
    return sum(call.started_at < before for call in calls), sum(call.started_at >= before for call in calls)


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_pollers_never_poll_at_once_and_the_survivor_takes_over(
        sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path) -> None:
    env = {"TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL or ""}
    instances = [Instance(tmp_path, name, env) for name in ("a", "b")]
    try:
        for instance in instances:
            await instance.start()
        receiver = await elected(instances)
        other = next(instance for instance in instances if instance is not receiver)
        buyers = await first_half(sandbox, 7100)
        assert conflicts(sandbox) == (0, 0)

        sandbox.set_delay(0.2, method="sendMessage")  # replies under way when the kill lands
        converse(buyers, MESSAGES // 2, MESSAGES)
        await until(lambda: delivered(sandbox), 60, "the receiver to take the second half")
        receiver.kill()
        killed_at = time.perf_counter()
        sandbox.set_delay(0, method="sendMessage")
        await until(other.receiving, TAKE_OVER, "the other instance to take over receiving")
        late = Buyer(sandbox, user_id=7199, first_name="Поздний")
        late.send("/start")
        await late.replies(2, timeout=30)

        await logged_in_order(postgres_url, buyers, MESSAGES)
        assert conflicts(sandbox, killed_at)[1] == 0  # the only 409s possible: the dead poller's own last call
        assert conflicts(sandbox, killed_at)[0] <= 1
        assert "Conflict" not in other.log and "poll_failed" not in other.log, other.log[-3000:]
    finally:
        for instance in instances:
            await instance.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_behind_one_webhook_one_instance_registers_it_and_every_update_is_handled_once_in_order(
        sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    async with Balancer(ports) as balancer:
        env = {"TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL or "",
               "PUBLIC_URL": f"http://127.0.0.1:{balancer.port}"}
        instances = [Instance(tmp_path, name, env) for name in ("a", "b")]
        for instance, port in zip(instances, ports):
            instance.port = port
            instance.env["HTTP_PORT"] = str(port)
        try:
            for instance in instances:
                await instance.start()
            receiver = await elected(instances)
            other = next(instance for instance in instances if instance is not receiver)
            webhook = (await sandbox.wait_for_call("setWebhook", timeout=30)).params
            assert webhook["url"] == f"http://127.0.0.1:{balancer.port}/webhooks/telegram" and len(webhook["secret_token"]) >= 32
            buyers = await first_half(sandbox, 7300)

            receiver.kill()  # the balancer sends everything to the other one from now on
            converse(buyers, MESSAGES // 2, MESSAGES)
            await until(other.receiving, TAKE_OVER, "the other instance to be elected")
            await until(lambda: webhook_set_twice(sandbox), TAKE_OVER, "the webhook to be registered again")
            assert [call.params["secret_token"] for call in sandbox.calls if call.method == "setWebhook"] == [webhook["secret_token"]] * 2
            await logged_in_order(postgres_url, buyers, MESSAGES)
            assert not [call for call in sandbox.calls if call.method == "getUpdates"]
            async with httpx.AsyncClient() as client:  # the secret token is checked by the instance that did not register it too
                forged = await client.post(f"http://127.0.0.1:{other.port}/webhooks/telegram", json={"update_id": 1},
                                           headers={"X-Telegram-Bot-Api-Secret-Token": webhook["secret_token"][:-1] + "x"})
            assert forged.status_code == 401
        finally:
            for instance in instances:
                await instance.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_rolling_restart_under_load_loses_and_repeats_nothing(sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path) -> None:
    """Two instances behind one webhook restarted one after the other (SIGTERM, then started again) while buyers
    write: every message logged once in its chat's order, every buyer greeted once."""
    ports = [free_port(), free_port()]
    async with Balancer(ports) as balancer:
        env = {"TELEGRAM_API_URL": sandbox.base_url, "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL or "",
               "PUBLIC_URL": f"http://127.0.0.1:{balancer.port}"}

        def instance(name: str, port: int) -> Instance:
            made = Instance(tmp_path, name, env)
            made.port, made.env["HTTP_PORT"] = port, str(port)
            return made

        instances = [instance("a", ports[0]), instance("b", ports[1])]
        try:
            for each in instances:
                await each.start()
            await elected(instances)
            buyers = await first_half(sandbox, 7600)
            for index, name in enumerate(("a2", "b2")):
                converse(buyers, MESSAGES // 2 + 2 * index, MESSAGES // 2 + 2 * index + 1)  # written while it stops
                await instances[index].stop()
                assert instances[index].process is not None and instances[index].process.returncode == 0, instances[index].log[-3000:]
                converse(buyers, MESSAGES // 2 + 2 * index + 1, MESSAGES // 2 + 2 * index + 2)  # while it is away
                instances[index] = await instance(name, ports[index]).start()
                await elected(instances)
            await logged_in_order(postgres_url, buyers, MESSAGES)
            assert [greetings(sandbox, buyer.id) for buyer in buyers] == [1] * BUYERS
        finally:
            for each in instances:
                await each.stop()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_buyer_mid_quiz_switches_instance_and_carries_on(
        sandbox: TelegramSandbox, postgres_url: str, tmp_path: Path, renderer: CatalogRenderer) -> None:
    ports = [free_port(), free_port()]
    async with Balancer(ports) as balancer:
        settings = [make_settings(sandbox, postgres_url, tmp_path / str(port), HTTP_PORT=port, REDIS_URL=REDIS_URL,
                                  PUBLIC_URL=f"http://127.0.0.1:{balancer.port}") for port in ports]
        buyer = Buyer(sandbox, user_id=7400, first_name="Анна")
        async with running(settings[0], renderer) as first, running(settings[1], renderer) as second:
            await sandbox.wait_for_call("setWebhook", timeout=30)
            balancer.ports = [ports[0]]  # the first instance takes the start of the quiz
            buyer.send("/start")
            intro, question = await buyer.replies(2)
            assert question["text"].startswith("Вопрос 1 из 4")
            buyer.click("Обувь")
            buyer.click("Готово")
            assert (await buyer.reply())["text"].startswith("Вопрос 2 из 4")
            await first.inbox.idle()
            balancer.ports = [ports[1]]  # … and the second one the rest
            buyer.click("300 тыс – 1 млн ₽")
            assert (await buyer.reply())["text"].startswith("Вопрос 3 из 4")
            buyer.click("Свой магазин")
            assert (await buyer.reply())["text"].startswith("Вопрос 4 из 4")
            buyer.send("Екатеринбург")
            done = await buyer.reply()
            assert "вас интересует обувь, объём закупки 300 тыс – 1 млн ₽, город доставки — Екатеринбург" in done["text"]
            await second.inbox.idle()
            async with second.db() as session:
                owners = (await session.execute(select(TgUpdate.owner).order_by(TgUpdate.update_id))).scalars().all()
            assert owners[:3] == [first.inbox.owner] * 3 and owners[3:] == [second.inbox.owner] * 3  # switched after two answers


async def test_on_sqlite_the_lock_is_a_file_beside_the_database_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = FileLock(str(tmp_path / "db.receiver.lock")), FileLock(str(tmp_path / "db.receiver.lock"))
    assert await first.acquire() and not await second.acquire()
    await first.release()
    assert await second.acquire()
    await second.release()


class FreezableProxy:
    """A TCP proxy to ``port`` on 127.0.0.1; :meth:`freeze` stops forwarding both ways without closing anything, as a
    network cut with no FIN and no RST looks to both ends."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.frozen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        for writer in self._writers:
            writer.close()

    def freeze(self) -> None:
        self.frozen.set()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if self.frozen.is_set():
                await asyncio.Event().wait()  # holds what it read, forever
            sink.write(data)
            await sink.drain()


@pytest.mark.postgres
async def test_a_receiver_cut_off_silently_stops_and_another_takes_the_lock_over(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder's network goes silent (no FIN, no RST): PostgreSQL would keep its session, and the lock, until TCP
    gave up. The holder's next check gets no answer and it stops receiving; another instance finds the holder's session
    silent for longer than that and ends it, then takes the lock."""
    monkeypatch.setattr(receiver, "ANSWER", 1.0)
    monkeypatch.setattr(receiver, "SILENT", 3.0)
    async with FreezableProxy(make_url(postgres_url).port or 5432) as proxy:
        cut_off = open_database(make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False))
        other = open_database(postgres_url)
        holder, standby = AdvisoryLock(cut_off.engine), AdvisoryLock(other.engine)
        try:
            assert await holder.acquire() and await holder.held()
            assert not await standby.acquire()
            proxy.freeze()
            check = asyncio.create_task(holder.held())

            async def check_over() -> bool:
                return check.done()

            await until(check_over, 30, "the cut-off holder's check to end")
            assert not check.result()  # no answer within ANSWER: it stops receiving
            assert not await standby.acquire()  # PostgreSQL still keeps the silent session, and the lock

            async def taken_over() -> bool:
                return await standby.acquire()

            await until(taken_over, 30, "another instance to take the lock over")
        finally:
            await holder.release()
            await standby.release()
            await cut_off.close()
            await other.close()
