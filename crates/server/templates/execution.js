// The execution page's script: opens an event's stored input or output in place. A
// <details data-blob=URL> fetches its blob the first time it opens (same origin, with the UI
// session's cookie) and shows it as text, never as markup. A bar of the waterfall links to its
// span (#span-SEQ); following it opens that span's inputs and outputs.
'use strict';
(function () {
  function show(d) {
    if (!d.dataset.blob || d.dataset.state) return;
    d.dataset.state = 'loading';
    const pre = d.querySelector('pre');
    pre.textContent = 'loading…';
    fetch(d.dataset.blob, { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then((r) => r.json().then((j) => [r.status, j], () => [r.status, null]))
      .then(([status, j]) => {
        if (status === 200 && j) {
          if (j.json !== null) {
            pre.textContent = JSON.stringify(j.json, null, 2);
          } else {
            pre.textContent = j.text + (j.truncated ? `\n… (the first part of ${j.bytes} bytes)` : '');
          }
          d.dataset.state = 'loaded';
        } else if (status === 410 && j && j.erased) {
          pre.textContent = 'erased (its data subject was erased)';
          d.dataset.state = 'erased';
        } else {
          pre.textContent = (j && j.error) || `could not load it (HTTP ${status})`;
          d.dataset.state = 'error';
        }
      })
      .catch(() => {
        pre.textContent = 'could not load it (the server did not answer)';
        d.dataset.state = 'error';
      });
  }

  // `toggle` does not bubble: listen in the capture phase.
  document.addEventListener('toggle', (ev) => {
    if (ev.target instanceof HTMLDetailsElement && ev.target.open) show(ev.target);
  }, true);

  function openTarget() {
    const id = decodeURIComponent(location.hash.slice(1));
    const span = id && document.getElementById(id);
    if (!span || !span.classList.contains('span')) return;
    span.querySelectorAll('details.io').forEach((d) => { d.open = true; });
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
})();
