// The approval queue's keyboard shortcuts (served as /ui/gates.js; the CSP allows no inline
// script). j / k move between gates, a approves the focused one, r rejects it (or, with no
// reason picked or typed, puts the cursor in its reason), 1-9 pick a recent reason, / types one,
// Ctrl+Enter in a reason rejects, Escape leaves it. The page works without it.
'use strict';
(function () {
  const cards = () => Array.from(document.querySelectorAll('section.gate'));
  let at = 0;

  function focus(i) {
    const cs = cards();
    if (!cs.length) return;
    at = Math.max(0, Math.min(i, cs.length - 1));
    cs.forEach((c, j) => c.classList.toggle('focused', j === at));
    cs[at].scrollIntoView({ block: 'nearest' });
  }

  function reject(card) {
    const reason = card.querySelector('textarea[name=reason]');
    const preset = card.querySelector('select[name=preset]');
    if (reason.value.trim() || (preset && preset.value)) {
      card.querySelector('button.reject').click();
    } else {
      reason.placeholder = 'a reason is needed to reject: type it, then Ctrl+Enter';
      reason.focus();
    }
  }

  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT' || t.tagName === 'SELECT');
    if (typing) {
      const card = t.closest('section.gate');
      if (e.key === 'Escape') t.blur();
      else if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && card) {
        e.preventDefault();
        reject(card);
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const card = cards()[at];
    if (!card) return;
    if (e.key === 'j') focus(at + 1);
    else if (e.key === 'k') focus(at - 1);
    else if (e.key === 'a') card.querySelector('button.approve').click();
    else if (e.key === 'r') reject(card);
    else if (e.key === '/') card.querySelector('textarea[name=reason]').focus();
    else if (/^[1-9]$/.test(e.key)) {
      const preset = card.querySelector('select[name=preset]');
      if (!preset || Number(e.key) >= preset.options.length) return;
      preset.selectedIndex = Number(e.key);
    } else return;
    e.preventDefault();
  });

  cards().forEach((c, i) => c.addEventListener('click', () => focus(i)));
  focus(0);
})();
