"""Screenshot of a sweep's trials in the MLflow UI's parallel-coordinates comparison.

    python docs/mlflow_screenshot.py --tracking-uri http://127.0.0.1:5000 \\
        --experiment unipose_ray --out docs/sweep_mlflow.png

Opens the children of the newest sweep's parent run on the UI's "Compare runs" page in
headless Chromium, picks the axes a user would (the weights, the size, ``val/score``)
through the page's own selectors, and saves the screenshot. How the README's picture was
taken; it drives a real browser over the DevTools protocol (aiohttp comes with Ray).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

PARAMS = ("w1_gt", "w_coco", "w_mpii", "size")
METRIC = "val/score"


def sweep_children(uri: str, experiment: str) -> tuple[str, list[str]]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    parents = client.search_runs([found.experiment_id], "tags.`unipose_ray.kind` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    children = client.search_runs(
        [found.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return found.experiment_id, [run.info.run_id for run in children]


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.js(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {expression}")
            await asyncio.sleep(0.5)

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=1)

    async def type_and_enter(self, text: str) -> None:
        await self.call("Input.insertText", text=text)
        await asyncio.sleep(0.6)
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13)
        await asyncio.sleep(0.4)


# the centre of the n-th multi-select of the parallel-coordinates panel (0: params, 1: metrics)
SELECT_BOX = """(() => {{
  const boxes = [...document.querySelectorAll('[role="combobox"], .ant-select-selector')]
    .filter(e => e.getBoundingClientRect().width > 0);
  const r = boxes[{n}].getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2, boxes.length];
}})()"""
CLOSE_ASSISTANT = """(() => {
  const close = [...document.querySelectorAll('button')].filter(b =>
    /close/i.test(b.getAttribute('aria-label') || '') && b.getBoundingClientRect().x > 900);
  close.forEach(b => b.click());
  return close.length;
})()"""
CLEAR_ALL = """(() => {
  const b = [...document.querySelectorAll('button')].find(e => e.textContent.trim() === 'Clear All');
  if (b) b.click();
  return !!b;
})()"""


async def shoot(url: str, out: Path, port: int) -> None:
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json()
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Emulation.setDeviceMetricsOverride", width=1500, height=1000,
                            deviceScaleFactor=1, mobile=False)
            await page.call("Page.navigate", url=url)
            await page.wait_for("document.body && document.body.innerText.includes("
                                "'Parallel Coordinates Plot')")
            await asyncio.sleep(3)
            await page.js(CLOSE_ASSISTANT)  # the UI's chat panel, not what this shows
            await asyncio.sleep(1)
            await page.js(CLEAR_ALL)
            await asyncio.sleep(1)
            for n, values in ((0, PARAMS), (1, (METRIC,))):
                x, y, _ = await page.js(SELECT_BOX.format(n=n))
                await page.click(x, y)
                for value in values:
                    await page.type_and_enter(value)
                await page.call("Input.dispatchKeyEvent", type="keyDown", key="Escape",
                                code="Escape", windowsVirtualKeyCode=27)
            await asyncio.sleep(3)
            shot = await page.call("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server's http URI")
    parser.add_argument("--experiment", default="unipose_ray")
    parser.add_argument("--out", type=Path, default=Path("docs/sweep_mlflow.png"))
    parser.add_argument("--port", type=int, default=9333)
    args = parser.parse_args()
    experiment_id, runs = sweep_children(args.tracking_uri, args.experiment)
    query = urllib.parse.urlencode({"runs": json.dumps(runs),
                                    "experiments": json.dumps([experiment_id])})
    url = f"{args.tracking_uri.rstrip('/')}/#/compare-runs?{query}"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        chrome = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             f"--remote-debugging-port={args.port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(60):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{args.port}/json/version").close()
                    break
                except OSError:
                    time.sleep(0.5)
            asyncio.run(shoot(url, args.out, args.port))
        finally:
            chrome.terminate()
            chrome.wait()
    print(f"{len(runs)} trials compared: {args.out}")


if __name__ == "__main__":
    main()
