import asyncio, sys, tempfile, time
import bench.journey as j
from bench.common import percentile
from bot.app import App
from bot.config import load_settings
from bot.logs import setup_logging
async def main(noworkers, url=None):
    setup_logging("WARNING")
    sb = await j.RemoteSandbox.start()
    try:
        with tempfile.TemporaryDirectory() as wd:
            s = load_settings(_env_file=None, BOT_TOKEN=j.TOKEN, TELEGRAM_API_URL=sb.base_url, WEBHOOK_SECRET=j.SECRET, HTTP_PORT=0, DATABASE_URL=url or f"sqlite+aiosqlite:///{wd}/b.sqlite3", DATA_DIR=wd)
            app = App(s)
            if noworkers: app.workers = []
            await app.start(); stop = asyncio.Event(); t = asyncio.create_task(app.serve(stop=stop)); await app.ready.wait()
            payloads = await j.website_quizzes(app, sb, 200)
            c0=time.process_time(); w0=time.perf_counter()
            g = await j.greetings(sb, payloads, 50)
            print("noworkers" if noworkers else "workers", {p: round(percentile(g, p/100)*1000,1) for p in (50,95,99)}, "cpu/greeting ms", round((time.process_time()-c0)/200*1000,2), "wall", round(time.perf_counter()-w0,2))
            stop.set(); await t; await app.close()
    finally:
        await sb.close()
if __name__ == "__main__":
    import os
    if os.environ.get("UV"):
        import uvloop; uvloop.install()
    asyncio.run(main(sys.argv[1] == "1", sys.argv[2] if len(sys.argv) > 2 else None))
