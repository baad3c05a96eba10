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
#include <structmember.h>
#include <time.h>

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


/* ---- the end of a span ----------------------------------------------------------------- */

/* What a runtime's spans call when they finish, for the usual processor list: the request
 * histogram of tracer.metrics (when on) and then the collector, which queues a kept span as
 * its frozen tuple. It does what tracer.runtime.chained() builds from the two processors'
 * Python hooks (the twins) for the common span: a server span of a known series, a sampled
 * trace with nothing to force, a queue with room. Anything else goes to those Python hooks,
 * decided before anything is changed, so both paths count and queue the same. */

#define SPAN_SLOTS(X) \
    X(kind) X(name) X(trace_id) X(request_id) X(span_id) X(parent_id) X(start_us) \
    X(duration_us) X(_done) X(method) X(url) X(path) X(status_code) X(error) X(annotations) \
    X(tags) X(local) X(tracestate) X(route) X(db)
#define LOCAL_SLOTS(X) X(sampled) X(must_collect)

typedef struct {
#define OFFSET(name) Py_ssize_t name;
    SPAN_SLOTS(OFFSET)
#undef OFFSET
} SpanOffsets;

typedef struct {
#define OFFSET(name) Py_ssize_t name;
    LOCAL_SLOTS(OFFSET)
#undef OFFSET
} LocalOffsets;

typedef struct {
    PyObject_HEAD
    PyTypeObject *span_type;
    PyTypeObject *local_type;
    SpanOffsets at;
    LocalOffsets local_at;
    PyObject *server_kind;     /* tracer.span.SERVER */
    PyObject *https;           /* "https:", what a URL is compared with for the scheme label */
    /* the histogram, or server == NULL when metrics are off */
    PyObject *server;          /* the recorder's server series: key -> list */
    PyObject *record;          /* the recorder's Python hook, for every other span */
    long long step;
    Py_ssize_t steps;
    Py_ssize_t *index_of;      /* steps entries */
    Py_ssize_t bound_count;
    long long *bounds;
    Py_ssize_t width;
    /* the collector and the pipeline it submits to */
    PyObject *collector;
    PyObject *collector_end;   /* collector.on_end, for every other span */
    PyObject *submit;          /* pipeline.submit as the collector holds it */
    PyObject *pipeline;
    PyObject *queue;           /* pipeline._queue, a deque */
    PyObject *append;          /* its append */
    PyObject *wake;            /* pipeline._wake, the worker's event */
    long long error_status;    /* collector.error_status */
    int has_slow;              /* collector.slow_us is not None */
    long long slow_us;
    Py_ssize_t max_queue;      /* pipeline.max_queue */
    Py_ssize_t batch_size;     /* pipeline.batch_size */
    PyObject *internal_error;  /* tracer.safety.internal_error */
    PyObject *collector_where; /* what internal_error is told when collector.on_end raised */
    PyObject *record_where;    /* ... and when the histogram's own step failed */
} EndState;

static PyObject *s_submit, *s_queue, *s_wake, *s_append, *s_is_set, *s_set, *s_one;

static int
end_traverse(EndState *self, visitproc visit, void *arg)
{
    Py_VISIT(self->span_type);
    Py_VISIT(self->local_type);
    Py_VISIT(self->server_kind);
    Py_VISIT(self->server);
    Py_VISIT(self->record);
    Py_VISIT(self->collector);
    Py_VISIT(self->collector_end);
    Py_VISIT(self->submit);
    Py_VISIT(self->pipeline);
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->wake);
    Py_VISIT(self->internal_error);
    return 0;
}

static int
end_clear(EndState *self)
{
    Py_CLEAR(self->span_type);
    Py_CLEAR(self->local_type);
    Py_CLEAR(self->server_kind);
    Py_CLEAR(self->https);
    Py_CLEAR(self->server);
    Py_CLEAR(self->record);
    Py_CLEAR(self->collector);
    Py_CLEAR(self->collector_end);
    Py_CLEAR(self->submit);
    Py_CLEAR(self->pipeline);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->internal_error);
    Py_CLEAR(self->collector_where);
    Py_CLEAR(self->record_where);
    return 0;
}

static void
end_dealloc(EndState *self)
{
    PyObject_GC_UnTrack(self);
    end_clear(self);
    PyMem_Free(self->index_of);
    PyMem_Free(self->bounds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EndStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.EndState",
    .tp_basicsize = sizeof(EndState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)end_dealloc,
    .tp_traverse = (traverseproc)end_traverse,
    .tp_clear = (inquiry)end_clear,
};

/* The offset of a __slots__ member of `type`, or -1 with an exception set. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
    }
    return offset;
}

/* A slot's value (borrowed), or NULL when it is unset. */
#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* The frozen tuple of a span (tracer.span.Span.freeze), or NULL when a slot is unset. */
static PyObject *
freeze_span(EndState *st, PyObject *span, PyObject *local)
{
    PyObject *done = SLOT(span, st->at._done);
    PyObject *sampled = SLOT(local, st->local_at.sampled);
    PyObject *must = SLOT(local, st->local_at.must_collect);
    if (done == NULL || sampled == NULL || must == NULL) {
        return NULL;
    }
    PyObject *fields[F_COUNT];
    fields[F_KIND] = SLOT(span, st->at.kind);
    fields[F_NAME] = SLOT(span, st->at.name);
    fields[F_TRACE_ID] = SLOT(span, st->at.trace_id);
    fields[F_REQUEST_ID] = SLOT(span, st->at.request_id);
    fields[F_SPAN_ID] = SLOT(span, st->at.span_id);
    fields[F_PARENT_ID] = SLOT(span, st->at.parent_id);
    fields[F_START_US] = SLOT(span, st->at.start_us);
    if (done != Py_True && done != Py_False) {
        return NULL; /* its truth would be Python code: the Python path */
    }
    fields[F_DURATION_US] = done == Py_True ? SLOT(span, st->at.duration_us) : Py_None;
    fields[F_METHOD] = SLOT(span, st->at.method);
    fields[F_URL] = SLOT(span, st->at.url);
    fields[F_PATH] = SLOT(span, st->at.path);
    fields[F_STATUS_CODE] = SLOT(span, st->at.status_code);
    fields[F_ERROR] = SLOT(span, st->at.error);
    fields[F_ANNOTATIONS] = SLOT(span, st->at.annotations);
    fields[F_TAGS] = SLOT(span, st->at.tags);
    fields[F_SAMPLED] = sampled;
    fields[F_MUST_COLLECT] = must;
    fields[F_TRACESTATE] = SLOT(span, st->at.tracestate);
    fields[F_ROUTE] = SLOT(span, st->at.route);
    fields[F_DB] = SLOT(span, st->at.db);
    for (int i = 0; i < F_COUNT; i++) {
        if (fields[i] == NULL) {
            return NULL;
        }
    }
    PyObject *out = PyTuple_New(F_COUNT);
    if (out == NULL) {
        return NULL;
    }
    for (int i = 0; i < F_COUNT; i++) {
        Py_INCREF(fields[i]);
        PyTuple_SET_ITEM(out, i, fields[i]);
    }
    return out;
}

/* Hand the exception set now to internal_error(where, exc), as the Python chain does. */
static void
report_error(EndState *st, PyObject *where)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    /* Only an Exception is caught there; anything else (KeyboardInterrupt) goes on. */
    if (value == NULL || !PyObject_TypeCheck(value, (PyTypeObject *)PyExc_Exception)) {
        PyErr_Restore(type, value, traceback);
        return;
    }
    PyObject *result = PyObject_CallFunctionObjArgs(st->internal_error, where, value, NULL);
    Py_XDECREF(result);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

/* Call a Python hook with the span; an exception from it goes to internal_error(where). */
static int
call_hook(EndState *st, PyObject *hook, PyObject *span, PyObject *where)
{
    PyObject *result = PyObject_CallOneArg(hook, span);
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    report_error(st, where);
    return PyErr_Occurred() ? -1 : 0;
}

/* The histogram's step: 1 when done here, 0 when the Python hook must do it, -1 on error. */
static int
record_server(EndState *st, PyObject *span)
{
    PyObject *kind = SLOT(span, st->at.kind);
    if (kind == NULL || (kind != st->server_kind &&
                         !(PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, st->server_kind) == 0))) {
        return 0;
    }
    PyObject *method = SLOT(span, st->at.method);
    PyObject *route = SLOT(span, st->at.route);
    PyObject *status = SLOT(span, st->at.status_code);
    PyObject *url = SLOT(span, st->at.url);
    PyObject *duration = SLOT(span, st->at.duration_us);
    /* Labels of exact built-in types only: hashing and comparing them runs no Python code. */
    if (method == NULL || route == NULL || status == NULL || url == NULL || duration == NULL ||
        !PyUnicode_CheckExact(url) || !PyLong_CheckExact(duration) ||
        !PyUnicode_CheckExact(method) || (route != Py_None && !PyUnicode_CheckExact(route)) ||
        (status != Py_None && !PyLong_CheckExact(status))) {
        return 0;
    }
    int overflow = 0;
    long long d = PyLong_AsLongLongAndOverflow(duration, &overflow);
    if (overflow || d < 0 || (d == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    int https = PyUnicode_Compare(url, st->https);
    if (https == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    PyObject *key = PyTuple_Pack(4, method, route, status, https > 0 ? Py_True : Py_False);
    if (key == NULL) {
        return -1;
    }
    PyObject *series = PyDict_GetItemWithError(st->server, key);
    Py_DECREF(key);
    if (series == NULL) {
        /* A new series (or an unhashable label): the Python hook makes it or says why not. */
        PyErr_Clear();
        return 0;
    }
    if (!PyList_CheckExact(series) || PyList_GET_SIZE(series) != st->width) {
        return 0;
    }
    Py_ssize_t index;
    if (d <= (long long)st->steps * st->step &&
        (Py_ssize_t)((d + st->step - 1) / st->step) < st->steps) {
        index = st->index_of[(d + st->step - 1) / st->step];
    }
    else {
        /* bisect_left(bounds, d) */
        Py_ssize_t lo = 0, hi = st->bound_count;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (st->bounds[mid] < d) {
                lo = mid + 1;
            }
            else {
                hi = mid;
            }
        }
        index = lo;
    }
    Py_ssize_t total_at = st->width - 1;
    if (!PyLong_CheckExact(PyList_GET_ITEM(series, index)) ||
        !PyLong_CheckExact(PyList_GET_ITEM(series, total_at))) {
        return 0;
    }
    /* Adding exact ints runs no Python code: the list and its items stay as they are. */
    PyObject *count = PyNumber_Add(PyList_GET_ITEM(series, index), s_one);
    if (count == NULL) {
        return -1;
    }
    PyObject *total = PyNumber_Add(PyList_GET_ITEM(series, total_at), duration);
    if (total == NULL) {
        Py_DECREF(count);
        return -1;
    }
    PyList_SetItem(series, index, count);
    PyList_SetItem(series, total_at, total);
    return 1;
}

/* A Python int as a long long, or 0 with *ok cleared (not an exact int, or too large). */
static long long
as_long_long(PyObject *value, int *ok)
{
    int overflow = 0;
    long long out = PyLong_CheckExact(value) ? PyLong_AsLongLongAndOverflow(value, &overflow) : 0;
    if (!PyLong_CheckExact(value) || overflow || (out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    *ok = 1;
    return out;
}

/* The collector's step and the pipeline's queue: 1 when done here, 0 when collector.on_end
 * must do it, -1 on error. */
static int
collect(EndState *st, PyObject *span)
{
    PyObject *local = SLOT(span, st->at.local);
    if (local == NULL || Py_TYPE(local) != st->local_type) {
        return 0;
    }
    PyObject *must = SLOT(local, st->local_at.must_collect);
    PyObject *sampled = SLOT(local, st->local_at.sampled);
    PyObject *error = SLOT(span, st->at.error);
    PyObject *status = SLOT(span, st->at.status_code);
    PyObject *duration = SLOT(span, st->at.duration_us);
    if (must != Py_False || sampled != Py_True || error != Py_None || status == NULL ||
        duration == NULL) {
        return 0;
    }
    int ok;
    if (status != Py_None) {
        /* status >= collector.error_status: the trace must be kept (the Python path). */
        long long code = as_long_long(status, &ok);
        if (!ok || code >= st->error_status) {
            return 0;
        }
    }
    if (st->has_slow) {
        /* duration > collector.slow_us: likewise. */
        long long d = as_long_long(duration, &ok);
        if (!ok || d > st->slow_us) {
            return 0;
        }
    }
    /* Pipeline.submit, whose refusal of a full queue is the Python path's. A forked child's
     * pipeline has a queue and an event of its own: read where they are now. */
    PyObject *queue = PyObject_GetAttr(st->pipeline, s_queue);
    if (queue == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (queue != st->queue) {
        PyObject *append = PyObject_GetAttr(queue, s_append);
        PyObject *wake = append == NULL ? NULL : PyObject_GetAttr(st->pipeline, s_wake);
        if (wake == NULL) {
            Py_XDECREF(append);
            Py_DECREF(queue);
            PyErr_Clear();
            return 0;
        }
        Py_INCREF(queue);
        Py_XSETREF(st->queue, queue);
        Py_XSETREF(st->append, append);
        Py_XSETREF(st->wake, wake);
    }
    Py_DECREF(queue);
    Py_ssize_t length = PyObject_Size(st->queue);
    if (length < 0) {
        PyErr_Clear();
        return 0;
    }
    if (length >= st->max_queue) {
        return 0;
    }
    PyObject *frozen = freeze_span(st, span, local);
    if (frozen == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *result = PyObject_CallOneArg(st->append, frozen);
    Py_DECREF(frozen);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    /* len(q) >= pipeline.batch_size and not pipeline._wake.is_set(): wake the worker. */
    length = PyObject_Size(st->queue);
    if (length < 0) {
        return -1;
    }
    if (length >= st->batch_size) {
        result = PyObject_CallMethodNoArgs(st->wake, s_is_set);
        int is_set = result == NULL ? -1 : PyObject_IsTrue(result);
        Py_XDECREF(result);
        if (is_set == 0) {
            result = PyObject_CallMethodNoArgs(st->wake, s_set);
            is_set = result == NULL ? -1 : 0;
            Py_XDECREF(result);
        }
        if (is_set < 0) {
            return -1;
        }
    }
    return 1;
}

static PyObject *
span_end(PyObject *state, PyObject *span)
{
    EndState *st = (EndState *)state;
    int exact = Py_TYPE(span) == st->span_type;
    if (st->server != NULL) {
        int done = exact ? record_server(st, span) : 0;
        if (done < 0) {
            report_error(st, st->record_where);
            if (PyErr_Occurred()) {
                return NULL;
            }
        }
        else if (done == 0 && call_hook(st, st->record, span, st->record_where) < 0) {
            return NULL;
        }
    }
    int done = exact ? collect(st, span) : 0;
    if (done < 0) {
        report_error(st, st->collector_where);
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (done == 0 && call_hook(st, st->collector_end, span, st->collector_where) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef span_end_def = {
    "span_end", span_end, METH_O,
    "End a span: the request histogram, then the collector and the pipeline's queue.",
};

/* end_chain(span_type, local_type, server_kind, collector, pipeline, internal_error,
 *           collector_where, histogram) -> the span's end hook. histogram is None (metrics
 * off) or (server series, record hook, step, index table, bounds, width, where). */
static PyObject *
end_chain(PyObject *module, PyObject *args)
{
    PyTypeObject *span_type, *local_type;
    PyObject *server_kind, *collector, *pipeline, *internal_error, *collector_where, *histogram;
    if (!PyArg_ParseTuple(args, "O!O!UOOOUO:end_chain", &PyType_Type, &span_type, &PyType_Type,
                          &local_type, &server_kind, &collector, &pipeline, &internal_error,
                          &collector_where, &histogram)) {
        return NULL;
    }
    if (s_one == NULL) {
#define NAME(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
        NAME(s_submit, "submit") NAME(s_queue, "_queue") NAME(s_wake, "_wake")
        NAME(s_append, "append") NAME(s_is_set, "is_set") NAME(s_set, "set")
#undef NAME
        if ((s_one = PyLong_FromLong(1)) == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&EndStateType) < 0) {
        return NULL;
    }
    EndState *st = PyObject_GC_New(EndState, &EndStateType);
    if (st == NULL) {
        return NULL;
    }
    st->span_type = NULL; st->local_type = NULL; st->server_kind = NULL; st->https = NULL;
    st->server = NULL; st->record = NULL; st->index_of = NULL; st->bounds = NULL;
    st->collector = NULL; st->collector_end = NULL; st->submit = NULL; st->pipeline = NULL;
    st->queue = NULL; st->append = NULL; st->wake = NULL;
    st->internal_error = NULL; st->collector_where = NULL; st->record_where = NULL;
    st->steps = 0; st->bound_count = 0; st->width = 0; st->step = 1;
    PyObject_GC_Track(st);
    Py_INCREF(span_type); st->span_type = span_type;
    Py_INCREF(local_type); st->local_type = local_type;
    Py_INCREF(server_kind); st->server_kind = server_kind;
    Py_INCREF(collector); st->collector = collector;
    Py_INCREF(pipeline); st->pipeline = pipeline;
    Py_INCREF(internal_error); st->internal_error = internal_error;
    Py_INCREF(collector_where); st->collector_where = collector_where;
    if ((st->https = PyUnicode_FromString("https:")) == NULL ||
        (st->collector_end = PyObject_GetAttrString(collector, "on_end")) == NULL ||
        (st->submit = PyObject_GetAttr(collector, s_submit)) == NULL ||
        (st->queue = PyObject_GetAttrString(pipeline, "_queue")) == NULL ||
        (st->append = PyObject_GetAttrString(st->queue, "append")) == NULL ||
        (st->wake = PyObject_GetAttrString(pipeline, "_wake")) == NULL) {
        goto fail;
    }
    /* The limits, fixed when the collector and the pipeline were made, as C numbers. */
    {
        PyObject *limits[4] = {NULL, NULL, NULL, NULL};
        limits[0] = PyObject_GetAttrString(collector, "error_status");
        limits[1] = PyObject_GetAttrString(collector, "slow_us");
        limits[2] = PyObject_GetAttrString(pipeline, "max_queue");
        limits[3] = PyObject_GetAttrString(pipeline, "batch_size");
        int ok = limits[0] && limits[1] && limits[2] && limits[3];
        int fits = 0;
        if (ok) {
            int a, b = 1, c, d;
            st->error_status = as_long_long(limits[0], &a);
            st->has_slow = limits[1] != Py_None;
            st->slow_us = st->has_slow ? as_long_long(limits[1], &b) : 0;
            st->max_queue = (Py_ssize_t)as_long_long(limits[2], &c);
            st->batch_size = (Py_ssize_t)as_long_long(limits[3], &d);
            fits = a && b && c && d;
        }
        for (int i = 0; i < 4; i++) {
            Py_XDECREF(limits[i]);
        }
        if (!ok) {
            goto fail;
        }
        if (!fits) {
            PyErr_SetString(PyExc_TypeError, "the collector's or pipeline's limits are not ints");
            goto fail;
        }
    }
#define OFFSET(name) if ((st->at.name = slot_offset(span_type, #name)) < 0) goto fail;
    SPAN_SLOTS(OFFSET)
#undef OFFSET
#define OFFSET(name) if ((st->local_at.name = slot_offset(local_type, #name)) < 0) goto fail;
    LOCAL_SLOTS(OFFSET)
#undef OFFSET
    if (histogram != Py_None) {
        PyObject *server, *record, *index_of, *bounds, *where;
        long long step;
        Py_ssize_t width;
        if (!PyArg_ParseTuple(histogram, "O!OLO!O!nU:histogram", &PyDict_Type, &server, &record,
                              &step, &PyList_Type, &index_of, &PyList_Type, &bounds, &width,
                              &where)) {
            goto fail;
        }
        Py_ssize_t steps = PyList_GET_SIZE(index_of), count = PyList_GET_SIZE(bounds);
        if (step < 1 || width != count + 2) {
            PyErr_SetString(PyExc_ValueError, "a histogram's step or width does not fit");
            goto fail;
        }
        st->index_of = PyMem_New(Py_ssize_t, steps + 1);
        st->bounds = PyMem_New(long long, count + 1);
        if (st->index_of == NULL || st->bounds == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (Py_ssize_t i = 0; i < steps; i++) {
            Py_ssize_t index = PyLong_AsSsize_t(PyList_GET_ITEM(index_of, i));
            if (index == -1 && PyErr_Occurred()) {
                goto fail;
            }
            if (index < 0 || index > count) {
                PyErr_SetString(PyExc_ValueError, "a bucket index out of range");
                goto fail;
            }
            st->index_of[i] = index;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            st->bounds[i] = PyLong_AsLongLong(PyList_GET_ITEM(bounds, i));
            if (st->bounds[i] == -1 && PyErr_Occurred()) {
                goto fail;
            }
        }
        st->steps = steps;
        st->bound_count = count;
        st->step = step;
        st->width = width;
        Py_INCREF(server); st->server = server;
        Py_INCREF(record); st->record = record;
        Py_INCREF(where); st->record_where = where;
    }
    PyObject *hook = PyCFunction_New(&span_end_def, (PyObject *)st);
    Py_DECREF(st);
    return hook;
fail:
    Py_DECREF(st);
    return NULL;
}


/* ---- the start of a server span -------------------------------------------------------- */

/* Runtime.server_span for the common request, as the runtime of one installation has it: a
 * path-only target of printable ASCII (no query, no fragment), a standard method, no trace
 * header, a Host met before, and neither ignore rules nor recorded headers configured (then
 * this is not made at all). The span and its LocalTrace are made slot by slot, as
 * tracer.span.new_root makes them; any other request goes to the Python method, decided before
 * anything is made. */

#define SPAN_EXTRA_SLOTS(X) X(is_local_root) X(sent_us)
#define LOCAL_ALL_SLOTS(X) \
    X(chain) X(closed) X(held) X(limited) X(must_collect) X(root) X(sampled) X(statements)

typedef struct {
    PyObject_HEAD
    PyObject *python;          /* the Python method, for every other request */
    PyTypeObject *span_type;
    PyTypeObject *local_type;
    SpanOffsets at;
    Py_ssize_t is_local_root_at, sent_us_at;
#define OFFSET(name) Py_ssize_t local_##name;
    LOCAL_ALL_SLOTS(OFFSET)
#undef OFFSET
    Py_ssize_t on_start_at;    /* Chain.on_start */
    PyObject *server_kind;
    PyObject *methods;         /* tracer.redaction.METHODS */
    Py_ssize_t max_path;
    PyObject *names;           /* the propagator's trace header names, as a tuple */
    PyObject *prefixes;        /* the runtime's URL prefixes: scheme -> {host: prefix} */
    PyObject *sampler;
    PyObject *chain;
} StartState;

static PyObject *s_decide, *s_get, *s_host, *s_zero;

static int
start_traverse(StartState *self, visitproc visit, void *arg)
{
    Py_VISIT(self->python);
    Py_VISIT(self->span_type);
    Py_VISIT(self->local_type);
    Py_VISIT(self->prefixes);
    Py_VISIT(self->sampler);
    Py_VISIT(self->chain);
    Py_VISIT(self->methods);
    Py_VISIT(self->names);
    return 0;
}

static int
start_clear(StartState *self)
{
    Py_CLEAR(self->python);
    Py_CLEAR(self->span_type);
    Py_CLEAR(self->local_type);
    Py_CLEAR(self->server_kind);
    Py_CLEAR(self->methods);
    Py_CLEAR(self->names);
    Py_CLEAR(self->prefixes);
    Py_CLEAR(self->sampler);
    Py_CLEAR(self->chain);
    return 0;
}

static void
start_dealloc(StartState *self)
{
    PyObject_GC_UnTrack(self);
    start_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject StartStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.StartState",
    .tp_basicsize = sizeof(StartState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)start_dealloc,
    .tp_traverse = (traverseproc)start_traverse,
    .tp_clear = (inquiry)start_clear,
};

/* Store a new reference to value in a slot that is still empty. */
static void
set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    Py_INCREF(value);
    PyObject **at = (PyObject **)((char *)obj + offset);
    PyObject *old = *at;
    *at = value;
    Py_XDECREF(old);
}

/* time.time_ns() // 1000 into *out: 0, or -1 with an exception set. clock_gettime is what
 * time.time_ns reads on POSIX; elsewhere time.time_ns itself is called. */
static int
wall_us(long long *out)
{
#if defined(CLOCK_REALTIME) && !defined(_WIN32)
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
    return 0;
#else
    static PyObject *time_ns = NULL;
    if (time_ns == NULL) {
        PyObject *time = PyImport_ImportModule("time");
        if (time == NULL) {
            return -1;
        }
        time_ns = PyObject_GetAttrString(time, "time_ns");
        Py_DECREF(time);
        if (time_ns == NULL) {
            return -1;
        }
    }
    PyObject *ns = PyObject_CallNoArgs(time_ns);
    if (ns == NULL) {
        return -1;
    }
    long long value = PyLong_AsLongLong(ns);
    Py_DECREF(ns);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = value / 1000;
    return 0;
#endif
}

/* time.time_ns() // 1000 */
static PyObject *
now_us(void)
{
    long long us;
    return wall_us(&us) < 0 ? NULL : PyLong_FromLongLong(us);
}

/* Whether the request is the common one, with its Host (borrowed from the caller's headers
 * or a new reference in *host_ref): 1, 0 (the Python path), or -1 on error. */
static int
common_request(StartState *st, PyObject *method, PyObject *target, PyObject *headers,
               int multidict, PyObject **host_ref)
{
    *host_ref = NULL;
    if (!PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(target) ||
        !PyUnicode_IS_ASCII(target)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(target);
    if (n == 0 || n > st->max_path) {
        return 0;
    }
    const Py_UCS1 *text = PyUnicode_1BYTE_DATA(target);
    if (text[0] != '/') {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS1 c = text[i];
        if (c < 0x20 || c > 0x7e || c == '?' || c == '#') {
            return 0;
        }
    }
    int known = PySet_Contains(st->methods, method);
    if (known <= 0) {
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(st->names);
    if (multidict) {
        for (Py_ssize_t i = 0; i < count; i++) {
            int found = PySequence_Contains(headers, PyTuple_GET_ITEM(st->names, i));
            if (found != 0) {
                return found < 0 ? -1 : 0;
            }
        }
        PyObject *host = PyObject_CallMethodOneArg(headers, s_get, s_host);
        if (host == NULL) {
            return -1;
        }
        *host_ref = host;
        return 1;
    }
    if (!PyDict_CheckExact(headers)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        int found = PyDict_Contains(headers, PyTuple_GET_ITEM(st->names, i));
        if (found != 0) {
            return found < 0 ? -1 : 0;
        }
    }
    PyObject *host = PyDict_GetItemWithError(headers, s_host);
    if (host == NULL && PyErr_Occurred()) {
        return -1;
    }
    host = host == NULL ? Py_None : host;
    Py_INCREF(host);
    *host_ref = host;
    return 1;
}

static PyObject *
start_new_root(StartState *st, PyObject *method, PyObject *path, PyObject *url)
{
    const unsigned char *pair = take_pair();
    if (pair == NULL) {
        return NULL;
    }
    PyObject *trace_id = hex_str(pair, 16);
    PyObject *span_id = trace_id == NULL ? NULL : hex_str(pair + 16, 8);
    PyObject *sampled = span_id == NULL ? NULL
                                        : PyObject_CallMethodOneArg(st->sampler, s_decide, trace_id);
    PyObject *name = sampled == NULL ? NULL : PyUnicode_FromFormat("%U %U", method, path);
    PyObject *start = name == NULL ? NULL : now_us();
    PyObject *local = start == NULL ? NULL : st->local_type->tp_alloc(st->local_type, 0);
    PyObject *span = local == NULL ? NULL : st->span_type->tp_alloc(st->span_type, 0);
    if (span == NULL) {
        Py_XDECREF(trace_id);
        Py_XDECREF(span_id);
        Py_XDECREF(sampled);
        Py_XDECREF(name);
        Py_XDECREF(start);
        Py_XDECREF(local);
        return NULL;
    }
    set_slot(local, st->local_sampled, sampled);
    set_slot(local, st->local_must_collect, Py_False);
    set_slot(local, st->local_chain, st->chain);
    set_slot(local, st->local_held, Py_None);
    set_slot(local, st->local_closed, Py_False);
    set_slot(local, st->local_limited, Py_False);
    set_slot(local, st->local_statements, Py_None);
    set_slot(local, st->local_root, span);
    set_slot(span, st->at.kind, st->server_kind);
    set_slot(span, st->at.name, name);
    set_slot(span, st->at.trace_id, trace_id);
    set_slot(span, st->at.request_id, trace_id);
    set_slot(span, st->at.parent_id, Py_None);
    set_slot(span, st->at.local, local);
    set_slot(span, st->is_local_root_at, Py_True);
    set_slot(span, st->at.span_id, span_id);
    set_slot(span, st->at.start_us, start);
    set_slot(span, st->at.duration_us, s_zero);
    set_slot(span, st->at.method, method);
    set_slot(span, st->at.url, url);
    set_slot(span, st->at.path, path);
    set_slot(span, st->at.status_code, Py_None);
    set_slot(span, st->at.error, Py_None);
    set_slot(span, st->at.annotations, Py_None);
    set_slot(span, st->at.tags, Py_None);
    set_slot(span, st->at.tracestate, Py_None);
    set_slot(span, st->at.route, Py_None);
    set_slot(span, st->sent_us_at, s_zero);
    set_slot(span, st->at.db, Py_None);
    set_slot(span, st->at._done, Py_False);
    Py_DECREF(trace_id);
    Py_DECREF(span_id);
    Py_DECREF(sampled);
    Py_DECREF(name);
    Py_DECREF(start);
    Py_DECREF(local);
    return span;
}

/* server_span(method, target, headers, scheme="http", multidict=False), as the runtime's. */
static PyObject *
server_span(PyObject *state, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    StartState *st = (StartState *)state;
    if (kwnames != NULL || nargs < 3 || nargs > 5) {
        return PyObject_Vectorcall(st->python, args, nargs, kwnames);
    }
    PyObject *method = args[0], *target = args[1], *headers = args[2];
    PyObject *scheme = nargs > 3 ? args[3] : NULL;
    int multidict = 0;
    if (nargs > 4) {
        multidict = PyObject_IsTrue(args[4]);
        if (multidict < 0) {
            return NULL;
        }
    }
    PyObject *host;
    int common = common_request(st, method, target, headers, multidict, &host);
    if (common < 0) {
        return NULL;
    }
    PyObject *prefix = NULL;
    if (common) {
        PyObject *prefixes = scheme == NULL ? NULL : PyDict_GetItemWithError(st->prefixes, scheme);
        if (scheme == NULL) {
            /* The default scheme, "http". */
            prefixes = PyDict_GetItemString(st->prefixes, "http");
        }
        if (prefixes != NULL && PyDict_CheckExact(prefixes)) {
            prefix = PyDict_GetItemWithError(prefixes, host);
            Py_XINCREF(prefix);
        }
        Py_XDECREF(host);
        if (PyErr_Occurred()) {
            /* An unhashable scheme or Host: the Python path says what it makes of it. */
            PyErr_Clear();
            prefix = NULL;
        }
    }
    if (prefix == NULL || !PyUnicode_CheckExact(prefix)) {
        /* Not the common request, or its Host's prefix not made yet: the Python path. */
        Py_XDECREF(prefix);
        return PyObject_Vectorcall(st->python, args, nargs, NULL);
    }
    PyObject *url = PyUnicode_Concat(prefix, target);
    Py_DECREF(prefix);
    if (url == NULL) {
        return NULL;
    }
    PyObject *span = start_new_root(st, method, target, url);
    Py_DECREF(url);
    if (span == NULL) {
        return NULL;
    }
    PyObject *on_start = SLOT(st->chain, st->on_start_at);
    if (on_start == NULL) {
        Py_DECREF(span);
        PyErr_SetString(PyExc_AttributeError, "'Chain' object has no attribute 'on_start'");
        return NULL;
    }
    if (on_start != Py_None) {
        Py_INCREF(on_start);
        PyObject *result = PyObject_CallOneArg(on_start, span);
        Py_DECREF(on_start);
        if (result == NULL) {
            Py_DECREF(span);
            return NULL;
        }
        Py_DECREF(result);
    }
    return span;
}

static PyMethodDef server_span_def = {
    "server_span", (PyCFunction)(void (*)(void))server_span, METH_FASTCALL | METH_KEYWORDS,
    "Start the server span of an inbound request (SR), or None when it is ignored.",
};

/* The number of names in a class's __slots__, or -1 with an exception set. */
static Py_ssize_t
slot_count(PyTypeObject *type)
{
    PyObject *slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    if (slots == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(slots);
    Py_DECREF(slots);
    return n;
}

/* server_start(python, span_type, local_type, chain_type, server_kind, methods, max_path,
 *              names, prefixes, sampler, chain) -> the runtime's server_span. */
static PyObject *
server_start(PyObject *module, PyObject *args)
{
    PyObject *python, *server_kind, *methods, *names, *prefixes, *sampler, *chain;
    PyTypeObject *span_type, *local_type, *chain_type;
    Py_ssize_t max_path;
    if (!PyArg_ParseTuple(args, "OO!O!O!UO!nO!O!OO:server_start", &python, &PyType_Type,
                          &span_type, &PyType_Type, &local_type, &PyType_Type, &chain_type,
                          &server_kind, &PyFrozenSet_Type, &methods, &max_path, &PyTuple_Type,
                          &names, &PyDict_Type, &prefixes, &sampler, &chain)) {
        return NULL;
    }
    if (!Py_IS_TYPE(chain, chain_type)) {
        PyErr_SetString(PyExc_TypeError, "chain is not a Chain");
        return NULL;
    }
    /* Every slot of the two classes is set here: a class with one more would leave it empty. */
    if (slot_count(span_type) != 22 || slot_count(local_type) != 8) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Span or LocalTrace has other slots than these");
        }
        return NULL;
    }
    if (s_zero == NULL) {
#define NAME(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
        NAME(s_decide, "decide") NAME(s_get, "get") NAME(s_host, "host")
#undef NAME
        if ((s_zero = PyLong_FromLong(0)) == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&StartStateType) < 0) {
        return NULL;
    }
    StartState *st = PyObject_GC_New(StartState, &StartStateType);
    if (st == NULL) {
        return NULL;
    }
    st->python = NULL; st->span_type = NULL; st->local_type = NULL; st->server_kind = NULL;
    st->methods = NULL; st->names = NULL; st->prefixes = NULL; st->sampler = NULL;
    st->chain = NULL;
    PyObject_GC_Track(st);
#define OFFSET(name) if ((st->at.name = slot_offset(span_type, #name)) < 0) goto fail;
    SPAN_SLOTS(OFFSET)
#undef OFFSET
    if ((st->is_local_root_at = slot_offset(span_type, "is_local_root")) < 0 ||
        (st->sent_us_at = slot_offset(span_type, "sent_us")) < 0 ||
        (st->on_start_at = slot_offset(chain_type, "on_start")) < 0) {
        goto fail;
    }
#define OFFSET(name) if ((st->local_##name = slot_offset(local_type, #name)) < 0) goto fail;
    LOCAL_ALL_SLOTS(OFFSET)
#undef OFFSET
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "a header name is not a str");
            goto fail;
        }
    }
    Py_INCREF(python); st->python = python;
    Py_INCREF(span_type); st->span_type = span_type;
    Py_INCREF(local_type); st->local_type = local_type;
    Py_INCREF(server_kind); st->server_kind = server_kind;
    Py_INCREF(methods); st->methods = methods;
    Py_INCREF(names); st->names = names;
    Py_INCREF(prefixes); st->prefixes = prefixes;
    Py_INCREF(sampler); st->sampler = sampler;
    Py_INCREF(chain); st->chain = chain;
    st->max_path = max_path;
    PyObject *hook = PyCFunction_New(&server_span_def, (PyObject *)st);
    Py_DECREF(st);
    return hook;
fail:
    Py_DECREF(st);
    return NULL;
}


/* ---- the end of a span: Span.finish ------------------------------------------------------ */

/* Span.finish as the Python method does it (py_finish, its twin, for a subclass or a span whose
 * times are not plain ints): SS (or CR) taken, the duration set, then the chain's on_end. The
 * offsets are the class's, read once by finish_method(). */
static struct {
    PyTypeObject *span_type;
    PyTypeObject *local_type;
    PyTypeObject *chain_type;
    PyObject *server_kind;
    PyObject *python;
    SpanOffsets at;
    Py_ssize_t is_local_root_at, sent_us_at, root_at, chain_at, on_end_at, must_at;
} fin;

static PyObject *s_on_end;

static PyObject *
span_finish(PyObject *span, PyObject *unused)
{
    if (Py_TYPE(span) != fin.span_type) {
        return PyObject_CallOneArg(fin.python, span);
    }
    PyObject *done = SLOT(span, fin.at._done);
    PyObject *root = SLOT(span, fin.is_local_root_at);
    PyObject *local = SLOT(span, fin.at.local);
    PyObject *start = SLOT(span, fin.at.start_us);
    PyObject *sent = SLOT(span, fin.sent_us_at);
    PyObject *kind = SLOT(span, fin.at.kind);
    if (done == NULL || root == NULL || local == NULL || start == NULL || sent == NULL ||
        kind == NULL || Py_TYPE(local) != fin.local_type || !PyLong_CheckExact(start) ||
        !PyLong_CheckExact(sent) || !PyBool_Check(done) || !PyBool_Check(root) ||
        (kind != fin.server_kind && !PyUnicode_CheckExact(kind))) {
        return PyObject_CallOneArg(fin.python, span);
    }
    if (done == Py_True) {
        Py_RETURN_NONE;
    }
    int ok_start, ok_sent;
    long long start_us = as_long_long(start, &ok_start);
    long long sent_us = as_long_long(sent, &ok_sent);
    /* Times far from any clock's (or negative) are the Python method's: no overflow here. */
    if (!ok_start || !ok_sent || start_us < 0 || sent_us < 0 || start_us >= (1LL << 62) ||
        sent_us >= (1LL << 62)) {
        return PyObject_CallOneArg(fin.python, span);
    }
    set_slot(span, fin.at._done, Py_True);
    if (root == Py_True) {
        /* LocalTrace.root points back at this span: a cycle left to the garbage collector. */
        set_slot(local, fin.root_at, Py_None);
    }
    long long end_us;
    int server = kind == fin.server_kind ||
                 (PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, fin.server_kind) == 0);
    if (sent_us >= start_us && server) {
        /* SS was taken when the response went out. */
        end_us = sent_us;
    }
    else if (wall_us(&end_us) < 0) {
        return NULL;
    }
    /* A wall clock set back during the span would make it negative. */
    PyObject *duration =
        PyLong_FromLongLong(end_us >= start_us && end_us < (1LL << 62) ? end_us - start_us : 0);
    if (duration == NULL) {
        return NULL;
    }
    set_slot(span, fin.at.duration_us, duration);
    Py_DECREF(duration);
    PyObject *chain = SLOT(local, fin.chain_at);
    if (chain == NULL) {
        PyErr_SetString(PyExc_AttributeError, "chain");
        return NULL;
    }
    PyObject *on_end = Py_TYPE(chain) == fin.chain_type ? SLOT(chain, fin.on_end_at) : NULL;
    if (on_end != NULL) {
        Py_INCREF(on_end);
    }
    else if ((on_end = PyObject_GetAttr(chain, s_on_end)) == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallOneArg(on_end, span);
    Py_DECREF(on_end);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyMethodDef span_finish_def = {
    "finish", span_finish, METH_NOARGS,
    "End the span (SS for a server span, CR for a client span) and hand it to the processors "
    "of its runtime.",
};

/* finish_method(span_type, local_type, chain_type, server_kind, python_finish) -> a method
 * descriptor of span_type for Span.finish. */
static PyObject *
finish_method(PyObject *module, PyObject *args)
{
    PyTypeObject *span_type, *local_type, *chain_type;
    PyObject *server_kind, *python;
    if (!PyArg_ParseTuple(args, "O!O!O!UO:finish_method", &PyType_Type, &span_type, &PyType_Type,
                          &local_type, &PyType_Type, &chain_type, &server_kind, &python)) {
        return NULL;
    }
    if (s_on_end == NULL && (s_on_end = PyUnicode_InternFromString("on_end")) == NULL) {
        return NULL;
    }
#define OFFSET(name) if ((fin.at.name = slot_offset(span_type, #name)) < 0) return NULL;
    SPAN_SLOTS(OFFSET)
#undef OFFSET
    if ((fin.is_local_root_at = slot_offset(span_type, "is_local_root")) < 0 ||
        (fin.sent_us_at = slot_offset(span_type, "sent_us")) < 0 ||
        (fin.root_at = slot_offset(local_type, "root")) < 0 ||
        (fin.chain_at = slot_offset(local_type, "chain")) < 0 ||
        (fin.on_end_at = slot_offset(chain_type, "on_end")) < 0 ||
        (fin.must_at = slot_offset(local_type, "must_collect")) < 0) {
        return NULL;
    }
    Py_INCREF(span_type);
    Py_XSETREF(fin.span_type, span_type);
    Py_INCREF(local_type);
    Py_XSETREF(fin.local_type, local_type);
    Py_INCREF(chain_type);
    Py_XSETREF(fin.chain_type, chain_type);
    Py_INCREF(server_kind);
    Py_XSETREF(fin.server_kind, server_kind);
    Py_INCREF(python);
    Py_XSETREF(fin.python, python);
    return PyDescr_NewMethod(span_type, &span_finish_def);
}

/* ---- the response headers ------------------------------------------------------------------ */

/* Runtime.response_headers for a span whose trace need not be kept (nothing failed, nothing is
 * slow, no x-must-collect): x-parent, x-client-send and the caller's x-span-id, into aiohttp's
 * headers or as the lines of an http.server head. Any other span goes to the Python method. */

typedef struct {
    PyObject_HEAD
    PyObject *python;
    PyObject *service_token;   /* x-parent's value */
    PyObject *head_start;      /* b"x-parent: ...\r\nx-client-send: " */
    long long error_status;
    int has_slow;
    long long slow_us;
} HeadersState;

static PyObject *s_x_parent, *s_x_client_send, *s_x_span_id, *s_empty_bytes;

static int
headers_traverse(HeadersState *self, visitproc visit, void *arg)
{
    Py_VISIT(self->python);
    return 0;
}

static int
headers_clear(HeadersState *self)
{
    Py_CLEAR(self->python);
    Py_CLEAR(self->service_token);
    Py_CLEAR(self->head_start);
    return 0;
}

static void
headers_dealloc(HeadersState *self)
{
    PyObject_GC_UnTrack(self);
    headers_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject HeadersStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tracer._speedups.HeadersState",
    .tp_basicsize = sizeof(HeadersState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)headers_dealloc,
    .tp_traverse = (traverseproc)headers_traverse,
    .tp_clear = (inquiry)headers_clear,
};

static PyObject *
response_headers(PyObject *state, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    HeadersState *st = (HeadersState *)state;
    if (kwnames != NULL || nargs < 1 || nargs > 2 || Py_TYPE(args[0]) != fin.span_type) {
        return PyObject_Vectorcall(st->python, args, nargs, kwnames);
    }
    PyObject *span = args[0];
    PyObject *headers = nargs > 1 ? args[1] : Py_None;
    PyObject *local = SLOT(span, fin.at.local);
    PyObject *error = SLOT(span, fin.at.error);
    PyObject *status = SLOT(span, fin.at.status_code);
    PyObject *duration = SLOT(span, fin.at.duration_us);
    PyObject *start = SLOT(span, fin.at.start_us);
    PyObject *parent = SLOT(span, fin.at.parent_id);
    if (local == NULL || Py_TYPE(local) != fin.local_type || error != Py_None || status == NULL ||
        duration == NULL || start == NULL || parent == NULL || !PyLong_CheckExact(start) ||
        (parent != Py_None && !(PyUnicode_CheckExact(parent) && PyUnicode_IS_ASCII(parent)))) {
        return PyObject_Vectorcall(st->python, args, nargs, NULL);
    }
    PyObject *must = SLOT(local, fin.must_at);
    if (must != Py_False) {
        return PyObject_Vectorcall(st->python, args, nargs, NULL);
    }
    int ok;
    if (status != Py_None) {
        long long code = as_long_long(status, &ok);
        if (!ok || code >= st->error_status) {
            return PyObject_Vectorcall(st->python, args, nargs, NULL);
        }
    }
    if (st->has_slow) {
        long long d = as_long_long(duration, &ok);
        if (!ok || d > st->slow_us) {
            return PyObject_Vectorcall(st->python, args, nargs, NULL);
        }
    }
    PyObject *sent = PyObject_Str(start);
    if (sent == NULL) {
        return NULL;
    }
    if (headers != Py_None) {
        /* A mapping's __setitem__ may be Python code: hold what is read from the span. */
        Py_INCREF(parent);
        int failed = PyObject_SetItem(headers, s_x_parent, st->service_token) < 0 ||
                     PyObject_SetItem(headers, s_x_client_send, sent) < 0 ||
                     (parent != Py_None && PyObject_SetItem(headers, s_x_span_id, parent) < 0);
        Py_DECREF(parent);
        Py_DECREF(sent);
        if (failed) {
            return NULL;
        }
        Py_INCREF(s_empty_bytes);
        return s_empty_bytes;
    }
    Py_ssize_t head = PyBytes_GET_SIZE(st->head_start);
    Py_ssize_t digits = PyUnicode_GET_LENGTH(sent);
    Py_ssize_t parent_length = parent == Py_None ? 0 : PyUnicode_GET_LENGTH(parent);
    Py_ssize_t size = head + digits + 2 + (parent == Py_None ? 0 : 11 + parent_length + 2);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        Py_DECREF(sent);
        return NULL;
    }
    char *at = PyBytes_AS_STRING(out);
    memcpy(at, PyBytes_AS_STRING(st->head_start), head);
    at += head;
    memcpy(at, PyUnicode_1BYTE_DATA(sent), digits);
    at += digits;
    memcpy(at, "\r\n", 2);
    at += 2;
    if (parent != Py_None) {
        memcpy(at, "x-span-id: ", 11);
        at += 11;
        memcpy(at, PyUnicode_1BYTE_DATA(parent), parent_length);
        at += parent_length;
        memcpy(at, "\r\n", 2);
    }
    Py_DECREF(sent);
    return out;
}

static PyMethodDef response_headers_def = {
    "response_headers", (PyCFunction)(void (*)(void))response_headers,
    METH_FASTCALL | METH_KEYWORDS,
    "The headers a traced server adds to its response (Runtime.response_headers).",
};

/* response_start(python, collector, service_token, head_start) -> the runtime's
 * response_headers; finish_method() must have run (the span's offsets). */
static PyObject *
response_start(PyObject *module, PyObject *args)
{
    PyObject *python, *collector, *token, *head_start;
    if (!PyArg_ParseTuple(args, "OOUS:response_start", &python, &collector, &token,
                          &head_start)) {
        return NULL;
    }
    if (fin.span_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "finish_method() has not run");
        return NULL;
    }
    if (s_empty_bytes == NULL) {
#define NAME(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;
        NAME(s_x_parent, "x-parent") NAME(s_x_client_send, "x-client-send")
        NAME(s_x_span_id, "x-span-id")
#undef NAME
        if ((s_empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL) {
            return NULL;
        }
    }
    PyObject *limits[2];
    limits[0] = PyObject_GetAttrString(collector, "error_status");
    limits[1] = limits[0] == NULL ? NULL : PyObject_GetAttrString(collector, "slow_us");
    if (limits[1] == NULL) {
        Py_XDECREF(limits[0]);
        return NULL;
    }
    int a, b = 1;
    long long error_status = as_long_long(limits[0], &a);
    int has_slow = limits[1] != Py_None;
    long long slow_us = has_slow ? as_long_long(limits[1], &b) : 0;
    Py_DECREF(limits[0]);
    Py_DECREF(limits[1]);
    if (!a || !b) {
        PyErr_SetString(PyExc_TypeError, "the collector's limits are not ints");
        return NULL;
    }
    if (PyType_Ready(&HeadersStateType) < 0) {
        return NULL;
    }
    HeadersState *st = PyObject_GC_New(HeadersState, &HeadersStateType);
    if (st == NULL) {
        return NULL;
    }
    Py_INCREF(python);
    st->python = python;
    Py_INCREF(token);
    st->service_token = token;
    Py_INCREF(head_start);
    st->head_start = head_start;
    st->error_status = error_status;
    st->has_slow = has_slow;
    st->slow_us = slow_us;
    PyObject_GC_Track(st);
    PyObject *hook = PyCFunction_New(&response_headers_def, (PyObject *)st);
    Py_DECREF(st);
    return hook;
}


/* records(frozen_spans, template) -> a list of the same length: each span's record as record()
 * builds it, or None for a span that needs the Python path (or whose record failed: the Python
 * path then says why). One call per slice of a batch instead of one per span. */
static PyObject *
records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "records() takes a list of frozen spans and a template");
        return NULL;
    }
    PyObject *frozen = args[0];
    Py_ssize_t n = PyList_GET_SIZE(frozen);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair[2] = {PyList_GET_ITEM(frozen, i), args[1]};
        Py_INCREF(pair[0]);
        PyObject *made = record(module, pair, 2);
        Py_DECREF(pair[0]);
        if (made == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                Py_DECREF(out);
                return NULL;
            }
            PyErr_Clear();
            Py_INCREF(Py_None);
            made = Py_None;
        }
        PyList_SET_ITEM(out, i, made);
        /* The list may have changed under Python code that record() ran. */
        if (PyList_GET_SIZE(frozen) != n) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "the list of frozen spans changed");
            return NULL;
        }
    }
    return out;
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
    {"finish_method", finish_method, METH_VARARGS,
     "Span.finish as a method of the class, the Python method as its twin."},
    {"response_start", response_start, METH_VARARGS,
     "The runtime's response_headers: the common span's in C, any other by the Python method."},
    {"server_start", server_start, METH_VARARGS,
     "The runtime's server_span: the common request in C, any other by the Python method."},
    {"records", (PyCFunction)(void (*)(void))records, METH_FASTCALL,
     "The records of a list of frozen spans, None where one needs the Python path."},
    {"end_chain", end_chain, METH_VARARGS,
     "The end hook of a runtime's spans for the histogram and the collector."},
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
