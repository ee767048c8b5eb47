// Contoso Chat web page: sign in with a token (kept in this tab's sessionStorage, never in a URL), ask,
// read the answer as it streams (server-sent events over fetch), follow citations, rate answers.
// Plain DOM code, no framework and no CDN: the page works with no internet. Text is always set with
// textContent, never parsed as HTML.
"use strict";

const KEY = "contoso-chat-token";
const $ = (id) => document.getElementById(id);
const history = [];

function token() { return sessionStorage.getItem(KEY); }

function show(signedIn) {
  $("signin").hidden = signedIn;
  $("chat").hidden = !signedIn;
  $("who").textContent = signedIn ? "Signed in" : "Not signed in";
  (signedIn ? $("question") : $("token")).focus();
}

function say(message) { $("status").textContent = message || ""; }

function explain(status, body, headers) {
  const server = body && body.error && body.error.message ? body.error.message : "";
  if (status === 401) {
    sessionStorage.removeItem(KEY);
    show(false);
    return "Your sign-in was not accepted (unknown, expired or revoked token). Please sign in again.";
  }
  if (status === 429) {
    const wait = headers.get("retry-after");
    return `Too many questions too fast. Please wait ${wait || "a few"} seconds and try again.`;
  }
  if (status === 503) return "The assistant is busy right now. Please try again in a moment.";
  if (status === 504) return "That took too long. Please ask again, perhaps a shorter question.";
  if (status === 413 || status === 422) return `That request was not accepted: ${server || "check your question"}.`;
  return `Something went wrong (${status}). ${server}`;
}

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  li.appendChild(body);
  $("log").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function finish(li, done) {
  li.querySelector(".text").textContent = done.answer;
  if (done.blocked) li.classList.add("blocked");
  if (done.citations && done.citations.length) {
    const sources = document.createElement("div");
    sources.className = "sources";
    sources.append("Sources: ");
    for (const id of done.citations) {
      const a = document.createElement("a");
      a.href = `/api/products/${encodeURIComponent(id)}`;
      a.textContent = id;
      a.target = "_blank";
      a.rel = "noopener";
      sources.appendChild(a);
    }
    li.appendChild(sources);
  }
  if (done.request_id) li.appendChild(feedback(done.request_id));
}

function feedback(requestId) {
  const box = document.createElement("div");
  box.className = "feedback";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "Was this answer helpful?");
  for (const [rating, label] of [["up", "Helpful"], ["down", "Not helpful"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.rating = rating;
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", async () => {
      const r = await fetch("/api/feedback", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
        body: JSON.stringify({ request_id: requestId, rating }),
      });
      if (r.status === 201) {
        box.querySelectorAll("button").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
        say("Thanks for the feedback.");
      } else {
        say(explain(r.status, await r.json().catch(() => null), r.headers));
      }
    });
    box.appendChild(b);
  }
  return box;
}

async function ask(question) {
  bubble("user", question);
  const li = bubble("assistant", "…");
  const text = li.querySelector(".text");
  say("");
  $("send").disabled = true;
  let answer = "";
  try {
    const response = await fetch("/api/chat", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
      body: JSON.stringify({ question, history: history.slice(-10), stream: true }),
    });
    if (!response.ok) {
      li.remove();
      say(explain(response.status, await response.json().catch(() => null), response.headers));
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        const payload = data ? JSON.parse(data) : {};
        if (name === "delta") {
          answer += payload.text;
          text.textContent = answer;
        } else if (name === "blocked") {
          li.classList.add("blocked");
        } else if (name === "done") {
          finish(li, payload);
          answer = payload.answer;
        } else if (name === "error") {
          say(payload.error ? payload.error.message : "The answer failed; please try again.");
        }
      }
    }
    history.push({ role: "user", content: question }, { role: "assistant", content: answer });
  } catch (err) {
    say("The connection to the assistant failed. Check that the service is running and try again.");
  } finally {
    $("send").disabled = false;
    $("question").focus();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("token").value = "";
    say("");
    show(true);
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("log").textContent = "";
    history.length = 0;
    show(false);
  });
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("question").value.trim();
    if (!q) return;
    $("question").value = "";
    ask(q);
  });
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  show(Boolean(token()));
});
