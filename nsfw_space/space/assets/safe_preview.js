() => {
  const sync = () => {
    const input = document.querySelector('#image-input');
    if (input) input.classList.toggle('judged-safe', !!document.querySelector('#verdict .verdict-normal'));
  };
  new MutationObserver(sync).observe(document.body, {subtree: true, childList: true, characterData: true});
  sync();
}
