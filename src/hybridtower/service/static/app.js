// hybridtower search page: plain DOM, no framework, no network beyond this server.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), input = $("q"), kSel = $("k");
  const statusEl = $("status"), notesEl = $("notes"), grid = $("results");
  const player = $("player"), video = $("player-video"), playerTitle = $("player-title");
  const playerScore = $("player-score"), playerLink = $("player-link"), playerError = $("player-error");
  const playerRange = $("player-range"), playerKind = $("player-kind");
  const weakBanner = $("weak-banner"), weakShow = $("weak-show"), weakText = $("weak-text");
  const moreWrap = $("more-wrap"), moreBtn = $("more"), examplesEl = $("examples");
  const imageFile = $("image-file"), dropHint = $("drop-hint");
  let seq = 0;  // drops responses of superseded searches
  let playSeq = 0;  // drops playback answers of superseded clicks
  let current = null;  // {kind: "text"|"image"|"similar", q, k, next offset, body for image, url}

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", !!isError);
  }

  function showNotes(notes) {
    notesEl.replaceChildren();
    for (const n of notes || []) {
      const li = document.createElement("li");
      li.textContent = n;
      notesEl.appendChild(li);
    }
  }

  // 75.5 -> "1:15", 3725 -> "1:02:05"
  function clock(seconds) {
    const t = Math.max(0, Math.floor(seconds));
    const h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, s = t % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }

  function rangeText(hit) {
    if (hit.start === null || hit.start === undefined) return "";
    return clock(hit.start) + (hit.end !== null && hit.end !== undefined ? "\u2013" + clock(hit.end) : "");
  }

  function card(hit) {
    const li = document.createElement("li");
    li.className = "card" + (hit.weak ? " weak" : "");
    li.dataset.id = String(hit.id);
    li.dataset.videoId = hit.video_id;
    if (hit.start !== null && hit.start !== undefined) li.dataset.start = String(hit.start);
    const a = document.createElement("a");
    a.href = hit.video_url;
    a.title = hit.name;
    const img = document.createElement("img");
    img.src = hit.thumbnail_url;
    img.alt = "thumbnail of " + hit.name;
    img.loading = "lazy";
    img.addEventListener("error", () => img.classList.add("broken"));
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("span");
    name.className = "name";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + hit.rank;
    name.append(rank, document.createTextNode(hit.name));
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(name, score);
    a.append(img, meta);
    const range = rangeText(hit);
    if (range) {
      const r = document.createElement("div");
      r.className = "range";
      r.textContent = range;
      r.title = "the best-matching moment" + (hit.moments && hit.moments.length ?
        " (" + hit.moments.length + " more: " + hit.moments.map((m) => clock(m.start)).join(", ") + ")" : "");
      a.appendChild(r);
    }
    if (hit.weak) {
      const w = document.createElement("div");
      w.className = "weak-tag";
      w.textContent = "weak match";
      a.appendChild(w);
    }
    a.addEventListener("click", (ev) => { ev.preventDefault(); play(hit); });
    const like = document.createElement("button");
    like.type = "button";
    like.className = "like";
    like.textContent = "more like this";
    like.addEventListener("click", (ev) => { ev.preventDefault(); similar(hit); });
    li.append(a, like);
    return li;
  }

  function showPlayerError(text) {
    playerError.hidden = false;
    playerError.textContent = text;
  }

  async function play(hit) {
    const my = ++playSeq;
    playerError.hidden = true;
    playerTitle.textContent = hit.name;
    playerRange.textContent = rangeText(hit);
    playerScore.textContent = "score " + hit.score.toFixed(3);
    playerKind.textContent = "";
    playerLink.href = hit.video_url;  // "open file": always the original
    player.hidden = false;
    player.dataset.id = String(hit.id);
    player.scrollIntoView({ block: "nearest" });
    let plan;
    try {
      const r = await fetch(hit.playback_url, { headers: { Accept: "application/json" } });
      plan = await r.json();
      if (!r.ok) throw new Error(plan && plan.detail ? plan.detail : "error " + r.status);
    } catch (e) {
      if (my !== playSeq) return;
      plan = { kind: "original", url: hit.video_url, offset: 0 };  // try the file itself
    }
    if (my !== playSeq) return;
    if (plan.kind === "none" || !plan.url) {
      video.removeAttribute("src");
      showPlayerError((plan.reason || "this file cannot be played") + "; use \"open file\" to download it.");
      return;
    }
    player.dataset.kind = plan.kind;
    playerKind.textContent = plan.kind === "preview" ? "preview" : "";
    playerKind.title = plan.reason || "";
    const target = (hit.start !== null && hit.start !== undefined) ? Math.max(0, hit.start - (plan.offset || 0)) : 0;
    if (plan.kind === "preview") setPlayerNote("preparing a playable preview\u2026 (" + plan.reason + ")");
    video.dataset.seekTo = String(target);
    video.src = plan.url;
    const p = video.play();
    if (p && p.catch) p.catch(() => {});  // autoplay may be refused; the controls still work
  }

  function setPlayerNote(text) {
    playerError.hidden = !text;
    playerError.classList.add("note");
    playerError.textContent = text || "";
  }

  video.addEventListener("loadedmetadata", () => {
    const t = parseFloat(video.dataset.seekTo || "0");
    if (t > 0 && isFinite(t)) video.currentTime = Math.min(t, Math.max(0, (video.duration || t) - 0.05));
    if (playerError.classList.contains("note")) setPlayerNote("");
  });

  video.addEventListener("error", () => {
    if (player.hidden || !video.getAttribute("src")) return;
    playerError.classList.remove("note");
    showPlayerError(player.dataset.kind === "preview"
      ? "No playable preview could be made for this file; use \"open file\" to download it."
      : "This browser cannot play this file's format; use \"open file\" to download it.");
  });

  $("player-close").addEventListener("click", closePlayer);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePlayer(); });
  function closePlayer() {
    playSeq++;
    video.pause();
    video.removeAttribute("src");
    video.load();
    player.hidden = true;
  }

  function resetResults() {
    grid.replaceChildren();
    grid.classList.remove("hidden-weak");
    weakBanner.hidden = true;
    moreWrap.hidden = true;
    showNotes([]);
  }

  async function request(url, init, append) {
    const my = ++seq;
    setStatus(append ? "loading more\u2026" : "searching\u2026");
    grid.setAttribute("aria-busy", "true");
    let resp, body;
    try {
      resp = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, init || {}));
    } catch (e) {
      if (my !== seq) return;
      grid.removeAttribute("aria-busy");
      if (!append) resetResults(); else showNotes([]);
      setStatus("Server not reachable: is `hybridtower serve` still running? (reload the page once it is)", true);
      return;
    }
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (my !== seq) return;
    grid.removeAttribute("aria-busy");
    if (!resp.ok || !body || !Array.isArray(body.hits)) {
      resetResults();
      setStatus(body && body.detail ? body.detail : "the server answered with error " + resp.status, true);
      return;
    }
    const cards = body.hits.map(card);
    if (append) grid.append(...cards); else grid.replaceChildren(...cards);
    showNotes(body.notes);
    if (!append) {
      const noClose = !!body.no_close_match && body.hits.length > 0;
      weakBanner.hidden = !noClose;
      grid.classList.toggle("hidden-weak", noClose);
      weakShow.hidden = !noClose;
      if (noClose && body.weak_threshold !== null && body.weak_threshold !== undefined) {
        weakText.textContent = "Nothing in the index scores above this index's weak-match threshold (" +
          body.weak_threshold.toFixed(3) + "); the nearest videos below are probably not what you asked for.";
      }
    }
    current.offset = body.offset + body.hits.length;
    moreWrap.hidden = !body.has_more;
    const n = grid.children.length;
    setStatus((body.no_close_match ? "no close match \u00b7 " : "") + n + " result" + (n === 1 ? "" : "s") +
              " of " + body.total_videos + " videos in " + Math.round(body.took_ms) + " ms" +
              (current.kind !== "text" ? " \u00b7 " + body.query : ""));
    document.body.dataset.searches = String((+document.body.dataset.searches || 0) + 1);
  }

  function pageUrl(base, offset) {
    const sep = base.indexOf("?") >= 0 ? "&" : "?";
    return base + sep + new URLSearchParams({ k: String(current.k), offset: String(offset) }).toString();
  }

  function search(q, k) {
    current = { kind: "text", base: "/search?" + new URLSearchParams({ q: q }).toString(), k: k, offset: 0 };
    return request(pageUrl(current.base, 0), null, false);
  }

  function similar(hit) {
    history.replaceState(null, "", location.pathname);
    current = { kind: "similar", base: hit.similar_url, k: kSel.value, offset: 0 };
    return request(pageUrl(current.base, 0), null, false);
  }

  function searchImage(file) {
    if (!file) return;
    if (!/^image\//.test(file.type || "")) {
      setStatus("that file is not an image (" + (file.type || "unknown type") + ")", true);
      return;
    }
    history.replaceState(null, "", location.pathname);
    current = { kind: "image", base: "/search/image", k: kSel.value, offset: 0, file: file };
    return request(pageUrl(current.base, 0), { method: "POST", body: file, headers: { "Content-Type": file.type, Accept: "application/json" } }, false);
  }

  moreBtn.addEventListener("click", () => {
    if (!current) return;
    const init = current.kind === "image"
      ? { method: "POST", body: current.file, headers: { "Content-Type": current.file.type, Accept: "application/json" } }
      : null;
    request(pageUrl(current.base, current.offset), init, true);
  });

  weakShow.addEventListener("click", () => {
    grid.classList.remove("hidden-weak");
    weakShow.hidden = true;
  });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = input.value;
    const k = kSel.value;
    const params = new URLSearchParams({ q: q, k: k });
    history.replaceState(null, "", "?" + params.toString());
    search(q, k);
  });

  imageFile.addEventListener("change", () => { searchImage(imageFile.files[0]); imageFile.value = ""; });
  document.addEventListener("dragover", (ev) => {
    if (ev.dataTransfer && [...ev.dataTransfer.types].includes("Files")) { ev.preventDefault(); dropHint.hidden = false; }
  });
  document.addEventListener("dragleave", (ev) => { if (!ev.relatedTarget) dropHint.hidden = true; });
  document.addEventListener("drop", (ev) => {
    dropHint.hidden = true;
    if (!ev.dataTransfer || !ev.dataTransfer.files.length) return;
    ev.preventDefault();
    searchImage(ev.dataTransfer.files[0]);
  });

  function showExamples(list) {
    if (!list || !list.length) return;
    for (const text of list) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "example";
      b.textContent = text;
      b.addEventListener("click", () => { input.value = text; form.requestSubmit(); });
      examplesEl.appendChild(b);
    }
    input.placeholder = "describe the video, e.g. " + list[0];
    examplesEl.hidden = false;
  }

  // a shared link (?q=...&k=...) runs its search on load
  const start = new URLSearchParams(location.search);
  if (start.get("k")) {
    for (const opt of kSel.options) if (opt.value === start.get("k")) kSel.value = opt.value;
  }
  if (start.get("q")) {
    input.value = start.get("q");
    search(input.value, kSel.value);
  }
  fetch("/healthz").then((r) => r.json()).then((h) => {
    if (!statusEl.textContent) setStatus(h.videos + " videos indexed" + (h.model_name ? " \u00b7 " + h.model_name : ""));
  }).catch(() => {
    if (!statusEl.textContent) setStatus("Server not reachable: is `hybridtower serve` still running?", true);
  });
  fetch("/examples").then((r) => r.json()).then((e) => showExamples(e.examples)).catch(() => {});
})();
