/* tracer._speedups: the optional compiled accelerator of tracer's hottest pure functions.
 *
 * Each function here has a Python twin that is the reference (tracer.ids, tracer.span); the
 * tests compare the two on generated input, and TRACE_PURE_PYTHON=1 makes tracer use the
 * twins only. Nothing here keeps Python state between calls but the id buffer and the values
 * handed over once by configure().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* ---- ids ------------------------------------------------------------------------------- */

/* 256 (trace id, span id) pairs of random bytes: 16 + 8 bytes each. */
#define ID_PAIRS 256
#define PAIR_BYTES 24
static unsigned char id_buffer[ID_PAIRS * PAIR_BYTES];
static Py_ssize_t id_next = ID_PAIRS; /* the next pair to hand out; ID_PAIRS: empty */
static PyObject *urandom = NULL;       /* os.urandom, looked up on the first refill */

static const char HEX[] = "0123456789abcdef";

static PyObject *
hex_str(const unsigned char *bytes, Py_ssize_t n)
{
    PyObject *out = PyUnicode_New(n * 2, 127);
    if (out == NULL) {
        return NULL;
    }
    Py_UCS1 *text = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        text[2 * i] = (Py_UCS1)HEX[bytes[i] >> 4];
        text[2 * i + 1] = (Py_UCS1)HEX[bytes[i] & 15];
    }
    return out;
}

/* The next pair's 24 bytes, refilling the buffer from os.urandom when it is empty. os.urandom
 * may let other threads run: they may refill too, and each pair is still handed out once,
 * since taking one is a single step under the GIL. */
static const unsigned char *
take_pair(void)
{
    if (id_next >= ID_PAIRS) {
        if (urandom == NULL) {
            PyObject *os = PyImport_ImportModule("os");
            if (os == NULL) {
                return NULL;
            }
            PyObject *source = PyObject_GetAttrString(os, "urandom");
            Py_DECREF(os);
            if (source == NULL) {
                return NULL;
            }
            /* Another thread may have set it while the import ran. */
            if (urandom == NULL) {
                urandom = source;
            }
            else {
                Py_DECREF(source);
            }
        }
        PyObject *fresh = PyObject_CallFunction(urandom, "n", (Py_ssize_t)sizeof(id_buffer));
        if (fresh == NULL) {
            return NULL;
        }
        if (!PyBytes_Check(fresh) || PyBytes_GET_SIZE(fresh) != (Py_ssize_t)sizeof(id_buffer)) {
            Py_DECREF(fresh);
            PyErr_SetString(PyExc_RuntimeError, "os.urandom gave the wrong number of bytes");
            return NULL;
        }
        memcpy(id_buffer, PyBytes_AS_STRING(fresh), sizeof(id_buffer));
        Py_DECREF(fresh);
        /* Neither id may be all zeros: the lowest bit of each is set. */
        for (Py_ssize_t i = 0; i < ID_PAIRS; i++) {
            id_buffer[i * PAIR_BYTES + 15] |= 1;
            id_buffer[i * PAIR_BYTES + 23] |= 1;
        }
        id_next = 0;
    }
    return id_buffer + PAIR_BYTES * id_next++;
}

static PyObject *
new_ids(PyObject *module, PyObject *unused)
{
    const unsigned char *pair = take_pair();
    if (pair == NULL) {
        return NULL;
    }
    PyObject *trace_id = hex_str(pair, 16);
    if (trace_id == NULL) {
        return NULL;
    }
    PyObject *span_id = hex_str(pair + 16, 8);
    if (span_id == NULL) {
        Py_DECREF(trace_id);
        return NULL;
    }
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(trace_id);
        Py_DECREF(span_id);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, trace_id);
    PyTuple_SET_ITEM(out, 1, span_id);
    return out;
}

static PyObject *
new_trace_id(PyObject *module, PyObject *unused)
{
    const unsigned char *pair = take_pair();
    return pair == NULL ? NULL : hex_str(pair, 16);
}

static PyObject *
new_span_id(PyObject *module, PyObject *unused)
{
    const unsigned char *pair = take_pair();
    return pair == NULL ? NULL : hex_str(pair + 16, 8);
}

static PyObject *
forget_ids(PyObject *module, PyObject *unused)
{
    /* A forked child must never hand out its parent's ids. */
    memset(id_buffer, 0, sizeof(id_buffer));
    id_next = ID_PAIRS;
    Py_RETURN_NONE;
}

/* ---- the span record ------------------------------------------------------------------- */

/* The frozen span's fields (tracer.span's index constants; configure() checks the count). */
enum {
    F_KIND, F_NAME, F_TRACE_ID, F_REQUEST_ID, F_SPAN_ID, F_PARENT_ID, F_START_US,
    F_DURATION_US, F_METHOD, F_URL, F_PATH, F_STATUS_CODE, F_ERROR, F_ANNOTATIONS, F_TAGS,
    F_SAMPLED, F_MUST_COLLECT, F_TRACESTATE, F_ROUTE, F_DB, F_COUNT
};

static PyObject *event_types = NULL; /* kind -> (start event, end event) */
static Py_ssize_t max_name = 0;

/* The record's keys and the event and http parts' keys, interned once. */
#define KEYS(X) \
    X(trace_id) X(tracestate) X(request_id) X(span_id) X(parent_id) X(kind) X(name) \
    X(start_us) X(duration_us) X(events) X(type) X(time_us) X(http) X(method) X(url) X(path) \
    X(status_code) X(route) X(annotations) X(tags) X(sampled) X(must_collect)
#define DECLARE(name) static PyObject *k_##name = NULL;
KEYS(DECLARE)
#undef DECLARE

static int
intern_keys(void)
{
#define INTERN(name) \
    if (k_##name == NULL && (k_##name = PyUnicode_InternFromString(#name)) == NULL) { \
        return -1; \
    }
    KEYS(INTERN)
#undef INTERN
    return 0;
}

static PyObject *
event(PyObject *type, PyObject *time_us)
{
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    if (PyDict_SetItem(out, k_type, type) < 0 || PyDict_SetItem(out, k_time_us, time_us) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* The record's events for a kind whose event names are `types` (an exact pair, or NULL for a
 * kind without events); the caller holds a reference to `types` throughout, since adding
 * start and duration may run Python code. */
static PyObject *
events_of(PyObject *types, PyObject *start, PyObject *duration)
{
    if (types == NULL) {
        return PyList_New(0);
    }
    PyObject *first = event(PyTuple_GET_ITEM(types, 0), start);
    if (first == NULL) {
        return NULL;
    }
    if (duration == Py_None) {
        PyObject *out = PyList_New(1);
        if (out == NULL) {
            Py_DECREF(first);
            return NULL;
        }
        PyList_SET_ITEM(out, 0, first);
        return out;
    }
    PyObject *end = PyNumber_Add(start, duration);
    if (end == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyObject *second = event(PyTuple_GET_ITEM(types, 1), end);
    Py_DECREF(end);
    if (second == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyObject *out = PyList_New(2);
    if (out == NULL) {
        Py_DECREF(first);
        Py_DECREF(second);
        return NULL;
    }
    PyList_SET_ITEM(out, 0, first);
    PyList_SET_ITEM(out, 1, second);
    return out;
}

/* Store value in out[key], consuming the reference to value. */
static int
put_new(PyObject *out, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int failed = PyDict_SetItem(out, key, value);
    Py_DECREF(value);
    return failed;
}

/* record(frozen, template) -> the span record, as tracer.span.record(frozen, ..., template)
 * builds it, or None when the span needs the Python path: a name to clean, an error, tags,
 * annotations or a database call (each bounded or shaped by Python code). */
static PyObject *
record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "record() takes a frozen span and a template");
        return NULL;
    }
    PyObject *frozen = args[0], *template = args[1];
    if (event_types == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tracer._speedups is not configured");
        return NULL;
    }
    if (!PyTuple_CheckExact(frozen) || PyTuple_GET_SIZE(frozen) != F_COUNT ||
        !PyDict_CheckExact(template)) {
        Py_RETURN_NONE;
    }
#define FIELD(i) PyTuple_GET_ITEM(frozen, (i))
    PyObject *name = FIELD(F_NAME);
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name) ||
        PyUnicode_GET_LENGTH(name) > max_name || FIELD(F_ERROR) != Py_None ||
        FIELD(F_DB) != Py_None) {
        Py_RETURN_NONE;
    }
    PyObject *annotations = FIELD(F_ANNOTATIONS), *tags = FIELD(F_TAGS);
    if (annotations != Py_None) {
        int truth = PyObject_IsTrue(annotations);
        if (truth != 0) {
            if (truth < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    if (tags != Py_None) {
        int truth = PyObject_IsTrue(tags);
        if (truth != 0) {
            if (truth < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    PyObject *kind = FIELD(F_KIND), *start = FIELD(F_START_US), *duration = FIELD(F_DURATION_US);
    PyObject *method = FIELD(F_METHOD), *status = FIELD(F_STATUS_CODE);
    /* The kind's event names, held (with the table) while Python code may run below. */
    PyObject *table = Py_NewRef(event_types);
    PyObject *types = PyDict_GetItemWithError(table, kind);
    Py_XINCREF(types);
    Py_DECREF(table);
    if (types == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (types != NULL && !(PyTuple_CheckExact(types) && PyTuple_GET_SIZE(types) == 2)) {
        Py_DECREF(types);
        Py_RETURN_NONE;
    }
    PyObject *out = PyDict_Copy(template);
    if (out == NULL) {
        Py_XDECREF(types);
        return NULL;
    }
    int truth = PyObject_IsTrue(duration);
    if (truth < 0) {
        goto fail;
    }
    if (PyDict_SetItem(out, k_trace_id, FIELD(F_TRACE_ID)) < 0 ||
        (FIELD(F_TRACESTATE) != Py_None &&
         PyDict_SetItem(out, k_tracestate, FIELD(F_TRACESTATE)) < 0) ||
        PyDict_SetItem(out, k_request_id, FIELD(F_REQUEST_ID)) < 0 ||
        PyDict_SetItem(out, k_span_id, FIELD(F_SPAN_ID)) < 0 ||
        (FIELD(F_PARENT_ID) != Py_None &&
         PyDict_SetItem(out, k_parent_id, FIELD(F_PARENT_ID)) < 0) ||
        PyDict_SetItem(out, k_kind, kind) < 0 || PyDict_SetItem(out, k_name, name) < 0 ||
        PyDict_SetItem(out, k_start_us, start) < 0) {
        goto fail;
    }
    if (truth) {
        if (PyDict_SetItem(out, k_duration_us, duration) < 0) {
            goto fail;
        }
    }
    else if (put_new(out, k_duration_us, PyLong_FromLong(0)) < 0) {
        goto fail;
    }
    if (put_new(out, k_events, events_of(types, start, duration)) < 0) {
        goto fail;
    }
    if (method != Py_None || status != Py_None) {
        PyObject *http = PyDict_New();
        if (http == NULL) {
            goto fail;
        }
        if (PyDict_SetItem(http, k_method, method) < 0 ||
            PyDict_SetItem(http, k_url, FIELD(F_URL)) < 0 ||
            PyDict_SetItem(http, k_path, FIELD(F_PATH)) < 0 ||
            PyDict_SetItem(http, k_status_code, status) < 0 ||
            PyDict_SetItem(http, k_route, FIELD(F_ROUTE)) < 0) {
            Py_DECREF(http);
            goto fail;
        }
        if (put_new(out, k_http, http) < 0) {
            goto fail;
        }
    }
    if (put_new(out, k_annotations, PyList_New(0)) < 0 ||
        put_new(out, k_tags, PyDict_New()) < 0 ||
        PyDict_SetItem(out, k_sampled, FIELD(F_SAMPLED)) < 0 ||
        PyDict_SetItem(out, k_must_collect, FIELD(F_MUST_COLLECT)) < 0) {
        goto fail;
    }
#undef FIELD
    Py_XDECREF(types);
    return out;
fail:
    Py_XDECREF(types);
    Py_DECREF(out);
    return NULL;
}

/* ---- request headers ------------------------------------------------------------------- */

/* name.lower() of an ASCII str without a method call (the name itself when it has no upper
 * case letter); any other object's own lower(). */
static PyObject *
lower_name(PyObject *name)
{
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name)) {
        return PyObject_CallMethod(name, "lower", NULL);
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    const Py_UCS1 *text = PyUnicode_1BYTE_DATA(name);
    Py_ssize_t i = 0;
    while (i < n && !(text[i] >= 'A' && text[i] <= 'Z')) {
        i++;
    }
    if (i == n) {
        Py_INCREF(name);
        return name;
    }
    PyObject *out = PyUnicode_New(n, 127);
    if (out == NULL) {
        return NULL;
    }
    Py_UCS1 *low = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_UCS1 c = text[j];
        low[j] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
    }
    return out;
}

/* The two items of one header, as `for name, value in items` unpacks it (new references). */
static int
unpack_pair(PyObject *item, PyObject **name, PyObject **value)
{
    if ((PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) ||
        (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2)) {
        PyObject *const *both = PySequence_Fast_ITEMS(item);
        *name = both[0];
        *value = both[1];
        Py_INCREF(*name);
        Py_INCREF(*value);
        return 0;
    }
    PyObject *iterator = PyObject_GetIter(item);
    if (iterator == NULL) {
        return -1;
    }
    *name = PyIter_Next(iterator);
    *value = *name == NULL ? NULL : PyIter_Next(iterator);
    PyObject *extra = *value == NULL ? NULL : PyIter_Next(iterator);
    Py_DECREF(iterator);
    if (extra != NULL || *value == NULL) {
        int got = *name == NULL ? 0 : (*value == NULL ? 1 : 3);
        Py_XDECREF(extra);
        Py_XDECREF(*name);
        Py_XDECREF(*value);
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError,
                         got > 2 ? "too many values to unpack (expected 2)"
                                 : "not enough values to unpack (expected 2, got %d)",
                         got);
        }
        return -1;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(*name);
        Py_DECREF(*value);
        return -1;
    }
    return 0;
}

/* The f-string "{first},{second}". */
static PyObject *
joined(PyObject *first, PyObject *second)
{
    PyObject *a = PyUnicode_CheckExact(first) ? (Py_INCREF(first), first)
                                              : PyObject_Format(first, NULL);
    if (a == NULL) {
        return NULL;
    }
    PyObject *b = PyUnicode_CheckExact(second) ? (Py_INCREF(second), second)
                                               : PyObject_Format(second, NULL);
    if (b == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *out = PyUnicode_FromFormat("%U,%U", a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    return out;
}

/* header_map(items): tracer.propagation.py_header_map's twin. */
static PyObject *
header_map(PyObject *module, PyObject *items)
{
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    PyObject *iterator = PyObject_GetIter(items);
    if (iterator == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *item;
    while ((item = PyIter_Next(iterator)) != NULL) {
        PyObject *raw, *value;
        int failed = unpack_pair(item, &raw, &value);
        Py_DECREF(item);
        if (failed) {
            goto fail;
        }
        PyObject *name = lower_name(raw);
        Py_DECREF(raw);
        if (name == NULL) {
            Py_DECREF(value);
            goto fail;
        }
        PyObject *before = PyDict_GetItemWithError(out, name); /* borrowed */
        if (before == NULL && PyErr_Occurred()) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto fail;
        }
        if (before != NULL) {
            PyObject *both = joined(before, value);
            Py_DECREF(value);
            if (both == NULL) {
                Py_DECREF(name);
                goto fail;
            }
            value = both;
        }
        failed = PyDict_SetItem(out, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (failed) {
            goto fail;
        }
    }
    if (PyErr_Occurred()) {
        goto fail;
    }
    Py_DECREF(iterator);
    return out;
fail:
    Py_DECREF(iterator);
    Py_DECREF(out);
    return NULL;
}

/* configure(event_types, max_name, field_count): what record() needs from tracer.span, handed
 * over once at import. */
static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *types;
    Py_ssize_t longest, fields;
    if (!PyArg_ParseTuple(args, "O!nn:configure", &PyDict_Type, &types, &longest, &fields)) {
        return NULL;
    }
    if (!PyDict_CheckExact(types)) {
        PyErr_SetString(PyExc_TypeError, "event types must be a dict");
        return NULL;
    }
    if (fields != F_COUNT) {
        PyErr_Format(PyExc_ValueError, "a frozen span has %zd fields here, %d in the accelerator",
                     fields, F_COUNT);
        return NULL;
    }
    if (intern_keys() < 0) {
        return NULL;
    }
    Py_INCREF(types);
    Py_XSETREF(event_types, types);
    max_name = longest;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Hand over what the accelerated functions need."},
    {"new_ids", new_ids, METH_NOARGS, "A fresh (trace id, span id) pair."},
    {"new_trace_id", new_trace_id, METH_NOARGS, "A fresh trace id."},
    {"new_span_id", new_span_id, METH_NOARGS, "A fresh span id."},
    {"forget_ids", forget_ids, METH_NOARGS, "Empty the id buffer (in a forked child)."},
    {"header_map", header_map, METH_O,
     "Request headers as one dict: lowercase names, repeated headers joined with ','."},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "The span record of a frozen span, or None when it needs the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tracer._speedups",
    "The optional compiled accelerator of tracer's hottest functions.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module_def);
}
