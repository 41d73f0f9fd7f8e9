// agentledger transcript browser: small enhancements; every page works without them.
"use strict";
(function () {
  // Forms that destroy something ask once more (their required checkbox is the no-script way).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // The live tail: new messages arrive as server-sent events carrying server-rendered,
  // escaped HTML. A tool output goes under its call when the call is on the page.
  var list = document.getElementById("messages");
  if (!list || !list.dataset.events || !window.EventSource) { return; }
  var status = document.getElementById("live-status");
  var source = new EventSource(list.dataset.events);
  function say(text) { if (status) { status.textContent = text; } }
  source.addEventListener("open", function () { say("Following new messages live."); });
  source.addEventListener("error", function () { say("Reconnecting to the live tail…"); });
  source.addEventListener("message", function (event) {
    var data = JSON.parse(event.data);
    if (document.getElementById("m" + data.seq)) { return; }  // already shown (a reconnect)
    var holder = document.createElement("template");
    holder.innerHTML = data.html;
    var node = holder.content.firstElementChild;
    if (!node) { return; }
    var slot = null;
    if (data.tool_call_id) {
      list.querySelectorAll(".tool-output-slot").forEach(function (candidate) {
        if (candidate.dataset.slotFor === data.tool_call_id && !candidate.firstElementChild) {
          slot = candidate;
        }
      });
    }
    var empty = list.querySelector(".empty");
    if (empty) { empty.remove(); }
    (slot || list).appendChild(node);
    say("New message #" + data.seq + " arrived.");
  });
})();
