// Loads the web build in headless Chromium and replays every conformance vector there.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { serveRepo } from "./serve.mjs";
import { launch } from "./browser.mjs";

test("every vector passes in Chromium", async () => {
  const files = readdirSync(fileURLToPath(new URL("../vectors/", import.meta.url))).filter((f) => f.endsWith(".json")).sort();
  const server = await serveRepo();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.address().port}/tests/browser/vectors.html?files=${files.join(",")}`);
    await page.waitForFunction(() => window.__results !== undefined, null, { timeout: 60000 });
    const results = await page.evaluate(() => window.__results);
    assert.deepEqual(errors, []);
    assert.deepEqual(results.failures, []);
    assert.ok(results.cases >= 150, `only ${results.cases} cases ran`);
    console.log(`chromium: ${results.cases} vector cases passed`);
  } finally {
    await browser.close();
    server.close();
  }
});
