# The Python REPL driver (microsandbox::repl): runs code sent as JSON lines {"id", "code"} in one
# persistent namespace; after each run writes "<token>:<id>:<ok|error>\n" to stdout and stderr,
# the end marker of that run's output. Started as `python3 -u -c <this> <token>`.
import ast, io, json, signal, sys, traceback
_tok = sys.argv[1]
sys.argv = [""]
signal.signal(signal.SIGINT, signal.default_int_handler)
_req_in = sys.stdin.buffer
sys.stdin = io.StringIO("")
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
def _run(code):
    try:
        tree = ast.parse(code, "<sandbox>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<sandbox>", "exec"), _ns)
        if last is not None:
            value = eval(compile(last, "<sandbox>", "eval"), _ns)
            if value is not None:
                print(repr(value))
        return "ok"
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<sandbox>":
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        return "error"
while True:
    line = _req_in.readline()
    if not line:
        break
    req = json.loads(line)
    status = _run(req["code"])
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    end = "%s:%s:%s\n" % (_tok, req["id"], status)
    sys.__stdout__.write(end); sys.__stdout__.flush()
    sys.__stderr__.write(end); sys.__stderr__.flush()
