// backdrop review station: keyboard shortcuts and the mask editor (brush, eraser, zoom, pan, undo).
// The mask is edited at the photo's own resolution in an off-screen canvas and saved as a 0/255 PNG.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const typing = (ev) => ["INPUT", "TEXTAREA", "SELECT"].includes(ev.target.tagName);

  document.addEventListener("keydown", (ev) => {
    if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "a" && $("approve-form")) { ev.preventDefault(); $("approve-form").submit(); }
    else if (ev.key === "r" && $("reject-form")) {
      ev.preventDefault();
      if ($("reason").value.trim()) $("reject-form").submit(); else $("reason").focus();
    } else if (ev.key === "n" && $("next")) { ev.preventDefault(); window.location = $("next").href; }
  });

  const root = $("editor");
  if (!root) return;
  const W = +root.dataset.width, H = +root.dataset.height, item = root.dataset.item, csrf = root.dataset.csrf;
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const mask = document.createElement("canvas"), overlay = document.createElement("canvas");
  mask.width = overlay.width = W; mask.height = overlay.height = H;
  const mctx = mask.getContext("2d", { willReadFrequently: true }), octx = overlay.getContext("2d");
  const photo = new Image();
  let tool = "brush", scale = 1, ox = 0, oy = 0, painting = false, panning = null, last = null, space = false;
  const undo = [];
  const status = (t) => { $("editor-status").textContent = t; };

  function fit() {
    canvas.width = Math.min(root.clientWidth || 900, 1200);
    canvas.height = Math.round(Math.min(canvas.width * H / W, 560));
    scale = Math.min(canvas.width / W, canvas.height / H);
    ox = (canvas.width - W * scale) / 2; oy = (canvas.height - H * scale) / 2;
    draw();
  }
  function draw() {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#888"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(scale, 0, 0, scale, ox, oy);
    ctx.imageSmoothingEnabled = scale < 1;
    if (photo.complete) ctx.drawImage(photo, 0, 0);
    if ($("overlay").checked) { ctx.globalAlpha = 0.5; ctx.drawImage(overlay, 0, 0); ctx.globalAlpha = 1; }
  }
  function rebuildOverlay() {
    const m = mctx.getImageData(0, 0, W, H), o = octx.createImageData(W, H);
    for (let i = 0; i < m.data.length; i += 4) {
      if (m.data[i] >= 128) { o.data[i] = 255; o.data[i + 1] = 0; o.data[i + 2] = 80; o.data[i + 3] = 255; }
    }
    octx.putImageData(o, 0, 0);
  }
  function toImage(ev) {
    const r = canvas.getBoundingClientRect();
    const sx = canvas.width / r.width, sy = canvas.height / r.height;
    return [((ev.clientX - r.left) * sx - ox) / scale, ((ev.clientY - r.top) * sy - oy) / scale];
  }
  function stroke(a, b) {
    const size = +$("brush-size").value;
    for (const [c, colour] of [[mctx, tool === "brush" ? "#fff" : "#000"], [octx, "rgb(255,0,80)"]]) {
      c.save();
      c.globalCompositeOperation = c === octx && tool === "eraser" ? "destination-out" : "source-over";
      c.strokeStyle = c.fillStyle = colour; c.lineWidth = size; c.lineCap = c.lineJoin = "round";
      c.beginPath(); c.moveTo(a[0], a[1]); c.lineTo(b[0] + 0.01, b[1]); c.stroke();
      c.restore();
    }
    draw();
  }
  function pushUndo() {
    undo.push([mctx.getImageData(0, 0, W, H), octx.getImageData(0, 0, W, H)]);
    if (undo.length > 30) undo.shift();
  }
  function doUndo() {
    const s = undo.pop();
    if (!s) { status("nothing to undo"); return; }
    mctx.putImageData(s[0], 0, 0); octx.putImageData(s[1], 0, 0); draw(); status("undone");
  }
  function zoomAt(factor, cx, cy) {
    const ns = Math.max(0.05, Math.min(40, scale * factor));
    ox = cx - (cx - ox) * ns / scale; oy = cy - (cy - oy) * ns / scale; scale = ns; draw();
  }
  function setTool(t) {
    tool = t;
    for (const b of root.querySelectorAll("[data-tool]")) b.classList.toggle("on", b.dataset.tool === t);
  }

  canvas.addEventListener("mousedown", (ev) => {
    ev.preventDefault();
    if (ev.button === 1 || ev.button === 2 || tool === "pan" || space) {
      panning = [ev.clientX, ev.clientY, ox, oy]; return;
    }
    pushUndo(); painting = true; last = toImage(ev); stroke(last, last);
  });
  window.addEventListener("mousemove", (ev) => {
    if (panning) {
      const r = canvas.getBoundingClientRect(), k = canvas.width / r.width;
      ox = panning[2] + (ev.clientX - panning[0]) * k; oy = panning[3] + (ev.clientY - panning[1]) * k; draw();
    } else if (painting) { const p = toImage(ev); stroke(last, p); last = p; }
  });
  window.addEventListener("mouseup", () => { painting = false; panning = null; });
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect(), k = canvas.width / r.width;
    zoomAt(ev.deltaY < 0 ? 1.2 : 1 / 1.2, (ev.clientX - r.left) * k, (ev.clientY - r.top) * k);
  }, { passive: false });
  document.addEventListener("keydown", (ev) => {
    if (typing(ev)) return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); doUndo(); }
    else if (ev.key === "b") setTool("brush");
    else if (ev.key === "e") setTool("eraser");
    else if (ev.key === " ") { space = true; ev.preventDefault(); }
  });
  document.addEventListener("keyup", (ev) => { if (ev.key === " ") space = false; });
  for (const b of root.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("zoom-in").addEventListener("click", () => zoomAt(1.25, canvas.width / 2, canvas.height / 2));
  $("zoom-out").addEventListener("click", () => zoomAt(0.8, canvas.width / 2, canvas.height / 2));
  $("zoom-fit").addEventListener("click", fit);
  $("undo").addEventListener("click", doUndo);
  $("overlay").addEventListener("change", draw);

  $("save-fix").addEventListener("click", () => {
    const m = mctx.getImageData(0, 0, W, H);
    for (let i = 0; i < m.data.length; i += 4) {  // strictly binary: antialiased brush edges are snapped
      const v = m.data[i] >= 128 ? 255 : 0;
      m.data[i] = m.data[i + 1] = m.data[i + 2] = v; m.data[i + 3] = 255;
    }
    const out = document.createElement("canvas"); out.width = W; out.height = H;
    out.getContext("2d").putImageData(m, 0, 0);
    status("saving…");
    out.toBlob((blob) => {
      const body = new FormData();
      body.append("csrf", csrf); body.append("mask", blob, item + ".png");
      fetch("/item/" + item + "/fix", { method: "POST", body, credentials: "same-origin" })
        .then((r) => { if (r.ok) window.location = r.url; else status("save failed: HTTP " + r.status); })
        .catch((err) => status("save failed: " + err));
    }, "image/png");
  });

  const m = new Image();
  let loaded = 0;
  const ready = () => {
    if (++loaded < 2) return;
    mctx.drawImage(m, 0, 0, W, H); rebuildOverlay(); fit(); root.dataset.ready = "1"; status("ready");
  };
  photo.onload = ready; m.onload = ready;
  photo.src = "/item/" + item + "/photo"; m.src = "/item/" + item + "/mask";
  window.addEventListener("resize", fit);
})();
