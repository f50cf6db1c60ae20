// The Node.js REPL driver (microsandbox::repl): as python.py, in one vm context; a request's
// timeout_ms stops synchronous code in node itself. Started as `node -e <this> <token>`.
const vm = require('vm'), util = require('util'), readline = require('readline');
const tok = process.argv[process.argv.length - 1];
process.argv.pop();
globalThis.require = require;
const rl = readline.createInterface({ input: process.stdin, terminal: false });
(async () => {
  for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    let status = 'ok';
    try {
      const opts = { filename: '<sandbox>' };
      if (req.timeout_ms) opts.timeout = req.timeout_ms;
      let r;
      try {
        r = vm.runInThisContext(req.code, opts);
      } catch (e) {
        // Top-level await (as the node REPL allows): run it in an async function, as an
        // expression when it is one, else as statements.
        if (!(e instanceof SyntaxError) || !/await/.test(req.code)) throw e;
        try {
          r = vm.runInThisContext('(async () => (' + req.code + '\n))()', opts);
        } catch (e2) {
          if (!(e2 instanceof SyntaxError)) throw e2;
          r = vm.runInThisContext('(async () => {' + req.code + '\n})()', opts);
        }
      }
      if (r && typeof r.then === 'function') r = await r;
      if (r !== undefined) console.log(util.inspect(r));
    } catch (e) {
      status = 'error';
      console.error(e && e.stack ? e.stack : String(e));
    }
    const end = tok + ':' + req.id + ':' + status + '\n';
    process.stdout.write(end);
    process.stderr.write(end);
  }
})();
