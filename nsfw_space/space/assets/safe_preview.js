() => {
  const sync = () => {
    const input = document.querySelector('#image-input');
    if (input) input.classList.toggle('judged-safe', !!document.querySelector('#verdict .verdict-normal'));
  };
  new MutationObserver(sync).observe(document.body, {subtree: true, childList: true, characterData: true});
  sync();
  // The Review tab's keys: a allow, b block, s skip, l look (not while typing in a field)
  const keys = {a: '#desk-allow', b: '#desk-block', s: '#desk-skip', l: '#desk-look'};
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName))) return;
    const button = keys[event.key] && document.querySelector(keys[event.key]);
    if (button && button.offsetParent !== null) { event.preventDefault(); button.click(); }
  });
}
