/* The standalone edge's reader of plain request heads: a GET, HEAD or OPTIONS request of
 * HTTP/1.1 with no body, whole in the bytes that came, read in one call.
 *
 * httptools (llhttp) stays the edge's parser: it reads every request this reader declines,
 * and refuses what is malformed. This reader only takes the common case off its path, where
 * each header costs a call from the parser into Python (about 1,100 instructions; a browser
 * sends ten or more). It accepts a strict subset of what llhttp accepts and gives what llhttp
 * would give (tests/server/test_heads.py compares the two), and declines the rest: any other
 * method or version, a body (Content-Length, Transfer-Encoding), an upgrade, a Connection
 * other than "keep-alive" (a "close" too: llhttp refuses what follows it, so it reads that
 * request), a byte outside visible ASCII, a space or a tab at the end of a value, an empty
 * value, a head not yet complete. A request taken keeps its connection open.
 *
 * read_head(data, start) -> (method, target, headers, end) | None
 *
 * method: "GET", "HEAD" or "OPTIONS" (str); target: the request target (bytes, origin-form);
 * headers: [(name, value)] as sent (bytes); end: the offset in data after the head.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* More headers than this: declined, for httptools and the edge's limits to judge. */
#define MOST_HEADERS 64

static PyObject *method_get, *method_head, *method_options;

/* RFC 9110 tchar: the bytes of a method or a header name. */
static unsigned char token_bytes[256];
/* A request target's bytes: visible ASCII. */
static unsigned char target_bytes[256];
/* A header value's bytes: visible ASCII, space and tab. */
static unsigned char value_bytes[256];

static void fill_tables(void)
{
    const char *specials = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        int visible = c >= 0x21 && c <= 0x7e;
        target_bytes[c] = (unsigned char)visible;
        value_bytes[c] = (unsigned char)(visible || c == ' ' || c == '\t');
        token_bytes[c] = (unsigned char)((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                         (c >= 'A' && c <= 'Z') ||
                                         (c != 0 && strchr(specials, c) != NULL));
    }
}

/* Where a header lies in the head. */
struct span {
    const unsigned char *name, *value;
    Py_ssize_t name_size, value_size;
};

#define ONES ((uint64_t)0x0101010101010101ULL)
#define HIGHS ((uint64_t)0x8080808080808080ULL)

/* Past the bytes from p that `table` admits, stopping at end. Eight at a time while all eight
 * lie in [lowest, 0x7e] (a range the table admits whole), then byte by byte: the word tests
 * are "has a byte less than n" and "has a byte more than n" of Bit Twiddling Hacks, exact for
 * n up to 0x80. */
static const unsigned char *skip(const unsigned char *p, const unsigned char *end,
                                 const unsigned char table[256], unsigned lowest)
{
    while (end - p >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        uint64_t below = (word - ONES * lowest) & ~word & HIGHS;
        uint64_t above = ((word + ONES * (0x7f - 0x7e)) | word) & HIGHS;
        if (below | above) {
            break;
        }
        p += 8;
    }
    while (p < end && table[*p]) {
        p++;
    }
    return p;
}

/* Whether the n bytes at s are `lower` (lower-case ASCII, n bytes long) in any case. */
static int same_word(const unsigned char *s, Py_ssize_t n, const char *lower)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + ('a' - 'A'));
        }
        if (c != (unsigned char)lower[i]) {
            return 0;
        }
    }
    return 1;
}

/* Whether a Connection header's value is "keep-alive" (llhttp reads it in any case). */
static int keeps_alive(const unsigned char *value, Py_ssize_t value_size)
{
    return value_size == 10 && same_word(value, 10, "keep-alive");
}

/* Whether a request with this header is one for httptools to read. A header's name is
 * compared only with the names of its length. */
static int declines(const unsigned char *name, Py_ssize_t name_size,
                    const unsigned char *value, Py_ssize_t value_size)
{
    switch (name_size) {
    case 7:
        return same_word(name, 7, "upgrade");
    case 10:
        return same_word(name, 10, "connection") && !keeps_alive(value, value_size);
    case 16:
        return same_word(name, 16, "proxy-connection") && !keeps_alive(value, value_size);
    case 14:
        return same_word(name, 14, "content-length");
    case 17:
        return same_word(name, 17, "transfer-encoding");
    default:
        return 0;
    }
}

/* Put a new reference in slot `index` of a new tuple: 0, or -1 if the reference is NULL (its
 * maker failed, with a Python error set). */
static int put(PyObject *tuple, Py_ssize_t index, PyObject *item)
{
    if (item == NULL) {
        return -1;
    }
    PyTuple_SET_ITEM(tuple, index, item);
    return 0;
}

static PyObject *read_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "read_head(data: bytes, start: int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start > size) {
        PyErr_SetString(PyExc_ValueError, "start is outside the data");
        return NULL;
    }
    const unsigned char *p = data + start;
    const unsigned char *end = data + size;

    PyObject *method;
    if (end - p >= 4 && memcmp(p, "GET ", 4) == 0) {
        method = method_get;
        p += 4;
    } else if (end - p >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        method = method_head;
        p += 5;
    } else if (end - p >= 8 && memcmp(p, "OPTIONS ", 8) == 0) {
        method = method_options;
        p += 8;
    } else {
        Py_RETURN_NONE;
    }

    const unsigned char *target = p;
    if (p == end || *p != '/') {
        Py_RETURN_NONE;
    }
    p = skip(p, end, target_bytes, 0x21);
    Py_ssize_t target_size = p - target;
    if (end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) {
        Py_RETURN_NONE;
    }
    p += 11;

    /* Where each header lies, found while the head is judged: a head declined costs no
     * allocation, and one taken is not read again. */
    struct span found[MOST_HEADERS];
    Py_ssize_t count = 0;
    for (;;) {
        if (end - p < 2) {
            Py_RETURN_NONE;
        }
        if (p[0] == '\r' && p[1] == '\n') {
            p += 2;
            break;
        }
        const unsigned char *name = p;
        while (p < end && token_bytes[*p]) {
            p++;
        }
        if (p == name || p == end || *p != ':') {
            Py_RETURN_NONE;
        }
        Py_ssize_t name_size = p - name;
        p++;
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
        const unsigned char *value = p;
        p = skip(p, end, value_bytes, 0x20);
        Py_ssize_t value_size = p - value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' || value_size == 0 ||
            value[value_size - 1] == ' ' || value[value_size - 1] == '\t') {
            Py_RETURN_NONE;
        }
        p += 2;
        if (count == MOST_HEADERS || declines(name, name_size, value, value_size)) {
            Py_RETURN_NONE;
        }
        found[count].name = name;
        found[count].name_size = name_size;
        found[count].value = value;
        found[count].value_size = value_size;
        count++;
    }
    Py_ssize_t head_end = p - data;

    PyObject *headers = PyList_New(count);
    if (headers == NULL) {
        return NULL;
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        const unsigned char *name = found[index].name;
        Py_ssize_t name_size = found[index].name_size;
        const unsigned char *value = found[index].value;
        Py_ssize_t value_size = found[index].value_size;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyList_SET_ITEM(headers, index, pair);
        if (put(pair, 0, PyBytes_FromStringAndSize((const char *)name, name_size)) < 0 ||
            put(pair, 1, PyBytes_FromStringAndSize((const char *)value, value_size)) < 0) {
            Py_DECREF(headers);
            return NULL;
        }
    }
    PyObject *head = PyTuple_New(4);
    if (head == NULL) {
        Py_DECREF(headers);
        return NULL;
    }
    Py_INCREF(method);
    PyTuple_SET_ITEM(head, 0, method);
    PyTuple_SET_ITEM(head, 2, headers);
    if (put(head, 1, PyBytes_FromStringAndSize((const char *)target, target_size)) < 0 ||
        put(head, 3, PyLong_FromSsize_t(head_end)) < 0) {
        Py_DECREF(head);
        return NULL;
    }
    return head;
}

static PyMethodDef methods[] = {
    {"read_head", (PyCFunction)(void (*)(void))read_head, METH_FASTCALL,
     "read_head(data, start) -> (method, target, headers, end) or None: the plain "
     "request head at data[start:], or None for httptools to read."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef heads_module = {
    PyModuleDef_HEAD_INIT, "_heads", "Plain HTTP/1.1 request heads, read in one call.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__heads(void)
{
    fill_tables();
    method_get = PyUnicode_InternFromString("GET");
    method_head = PyUnicode_InternFromString("HEAD");
    method_options = PyUnicode_InternFromString("OPTIONS");
    if (method_get == NULL || method_head == NULL || method_options == NULL) {
        return NULL;
    }
    return PyModule_Create(&heads_module);
}
