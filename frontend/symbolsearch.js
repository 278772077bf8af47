/*
 * The symbol box of the chart page: `window.TvfluxSymbolSearch`.
 *
 * A combobox (WAI-ARIA pattern: a text input with a listbox popup) that asks
 * the server as the user types (`/udf/search` through the datafeed's
 * `searchSymbols`), so a server with hundreds or thousands of symbols never
 * sends, or draws, the whole list. Keyboard: type to search, ArrowDown/Up to
 * move, Enter to pick, Escape to give up; the mouse works too.
 *
 *   TvfluxSymbolSearch.attach({ input, list, search(query) -> Promise<[{symbol, description}]>,
 *                               onPick(symbol), value, limit })
 *
 * returns `{ set(symbol), close() }`.
 */
(function (global) {
  "use strict";

  const DEBOUNCE_MS = 150;

  function attach(opts) {
    const { input, list, search, onPick } = opts;
    const limit = opts.limit || 30;
    let current = opts.value || "";
    let items = [];
    let active = -1;
    let timer = null;
    let seq = 0; // answers to older queries are dropped
    let shownFor = null; // the query the list on screen answers

    input.value = current;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    input.autocomplete = "off";
    input.spellcheck = false;
    list.setAttribute("role", "listbox");

    function open(flag) {
      list.hidden = !flag;
      if (!flag) shownFor = null;
      input.setAttribute("aria-expanded", flag ? "true" : "false");
      if (!flag) {
        active = -1;
        input.removeAttribute("aria-activedescendant");
      }
    }

    function render(query) {
      list.textContent = "";
      items.forEach((it, i) => {
        const li = document.createElement("li");
        li.id = `${list.id}-opt-${i}`;
        li.setAttribute("role", "option");
        li.dataset.symbol = it.symbol;
        li.setAttribute("aria-selected", i === active ? "true" : "false");
        const name = document.createElement("span");
        name.className = "sym";
        name.textContent = it.symbol;
        li.appendChild(name);
        if (it.description && it.description !== it.symbol) {
          const d = document.createElement("span");
          d.className = "desc";
          d.textContent = it.description;
          li.appendChild(d);
        }
        // mousedown, not click: the input's blur would close the list first.
        li.addEventListener("mousedown", (ev) => {
          ev.preventDefault();
          pick(it.symbol);
        });
        list.appendChild(li);
      });
      if (!items.length) {
        const li = document.createElement("li");
        li.className = "empty";
        li.setAttribute("aria-disabled", "true");
        li.textContent = query ? `No symbol matches "${query}"` : "No symbols";
        list.appendChild(li);
      } else if (items.length >= limit) {
        const li = document.createElement("li");
        li.className = "more";
        li.setAttribute("aria-disabled", "true");
        li.textContent = `First ${limit} shown; type more to narrow`;
        list.appendChild(li);
      }
      open(true);
    }

    function setActive(i) {
      if (!items.length) return;
      active = (i + items.length) % items.length;
      for (const li of list.querySelectorAll("[role=option]")) li.setAttribute("aria-selected", "false");
      const li = list.querySelector(`#${list.id}-opt-${active}`);
      li.setAttribute("aria-selected", "true");
      input.setAttribute("aria-activedescendant", li.id);
      li.scrollIntoView({ block: "nearest" });
    }

    async function query(text) {
      const mine = ++seq;
      let found;
      try {
        found = await search(text);
      } catch (e) {
        console.warn("tvflux: symbol search failed:", e.message);
        found = [];
      }
      if (mine !== seq || document.activeElement !== input) return false;
      shownFor = text;
      items = found.slice(0, limit);
      active = -1;
      // An exact match goes first so Enter after typing a full name picks it.
      const exact = items.findIndex((it) => it.symbol.toUpperCase() === text.trim().toUpperCase());
      if (exact > 0) items.unshift(items.splice(exact, 1)[0]);
      render(text);
      if (text.trim() && items.length) setActive(0);
      return true;
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(() => query(input.value.trim()), DEBOUNCE_MS);
    }

    function pick(symbol) {
      clearTimeout(timer);
      seq += 1;
      open(false);
      input.value = symbol;
      if (symbol !== current) {
        current = symbol;
        onPick(symbol);
      }
    }

    function cancel() {
      clearTimeout(timer);
      seq += 1;
      open(false);
      input.value = current;
    }

    input.addEventListener("focus", () => {
      input.select();
      query(""); // the first symbols at once: a click shows what there is
    });
    input.addEventListener("input", schedule);
    input.addEventListener("blur", cancel);
    input.addEventListener("keydown", (ev) => {
      switch (ev.key) {
        case "ArrowDown":
          ev.preventDefault();
          if (list.hidden) query(input.value.trim());
          else setActive(active + 1);
          break;
        case "ArrowUp":
          ev.preventDefault();
          if (!list.hidden) setActive(active - 1);
          break;
        case "Enter": {
          ev.preventDefault();
          const text = input.value.trim();
          if (shownFor === text && !list.hidden) {
            if (items.length) pick(items[Math.max(active, 0)].symbol);
            break;
          }
          // Typed faster than the debounce: answer this text, then pick.
          clearTimeout(timer);
          query(text).then((shown) => {
            if (shown && items.length) pick(items[0].symbol);
          });
          break;
        }
        case "Escape":
          ev.preventDefault();
          cancel();
          input.blur();
          break;
        default:
          break;
      }
    });

    return {
      set(symbol) {
        current = symbol;
        if (document.activeElement !== input) input.value = symbol;
      },
      close: cancel,
    };
  }

  global.TvfluxSymbolSearch = { attach };
})(typeof window !== "undefined" ? window : globalThis);
