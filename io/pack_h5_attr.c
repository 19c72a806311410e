/* pack_h5_attr.c: root attributes of the pack: scalar integers and (lists of) UTF-8 strings,
 * written whole or updated in place, read back with type, count and length checks. */
#include "pack_h5_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static k22_status attr_write(hid_t loc, const char *name, hid_t type, hid_t space, const void *buf,
                             const char *path, k22_err *err)
{
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0)
        return k22_err_set(err, K22_ERR_IO, "%s: cannot replace attribute '%s'", path, name);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, buf);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot write attribute '%s'", path, name);
    return K22_OK;
}

k22_status k22_ph_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err)
{
    hid_t s = H5Screate(H5S_SCALAR);
    k22_status st = attr_write(loc, name, H5T_NATIVE_INT64, s, &v, path, err);
    H5Sclose(s);
    return st;
}

/* Rewrites an existing scalar int64 attribute in place (the commit step: no delete/create, so a
 * kill leaves either the old or the new value). */
k22_status k22_ph_attr_update_i64(hid_t loc, const char *name, int64_t v, const char *path, k22_err *err)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return k22_err_set(err, K22_ERR_IO, "%s: cannot update attribute '%s'", path, name);
    return K22_OK;
}

k22_status k22_ph_attr_write_str(hid_t loc, const char *name, const char *v, const char *path, k22_err *err)
{
    hid_t s = H5Screate(H5S_SCALAR), t = k22_ph_vlstr_type();
    k22_status st = attr_write(loc, name, t, s, &v, path, err);
    H5Tclose(t);
    H5Sclose(s);
    return st;
}

k22_status k22_ph_attr_write_strs(hid_t loc, const char *name, const char **v, int n, const char *path,
                                  k22_err *err)
{
    hsize_t d = (hsize_t)n;
    hid_t s = H5Screate_simple(1, &d, NULL), t = k22_ph_vlstr_type();
    k22_status st = attr_write(loc, name, t, s, v, path, err);
    H5Tclose(t);
    H5Sclose(s);
    return st;
}

k22_status k22_ph_attr_read_i64(hid_t loc, const char *name, int64_t *v, const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' missing", path, name);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(s) != 1)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is not a single integer", path, name);
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
    H5Tclose(t);
    H5Sclose(s);
    H5Aclose(a);
    return st;
}

k22_status k22_ph_attr_read_int(hid_t loc, const char *name, int lo, int hi, int *v, const char *path,
                                k22_err *err)
{
    int64_t x = 0;
    k22_status st = k22_ph_attr_read_i64(loc, name, &x, path, err);
    if (st) return st;
    if (x < lo || x > hi)
        return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %lld, expected %d..%d", path, name,
                           (long long)x, lo, hi);
    *v = (int)x;
    return K22_OK;
}

/* Reads string element i of attribute or dataset contents already loaded: handles variable and
 * fixed-length strings. Reads attribute `name` (scalar or 1-D) into n malloc'd strings. */
k22_status k22_ph_attr_read_strs(hid_t loc, const char *name, int max_n, char **out, int *n_out,
                                 const char *path, k22_err *err)
{
    k22_status st = K22_OK;
    *n_out = 0;
    hid_t a = H5Aexists(loc, name) > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) return k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' missing", path, name);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a), mt = -1;
    hssize_t n = H5Sget_simple_extent_npoints(s);
    char **vl = NULL, *fixed = NULL;
    if (H5Tget_class(t) != H5T_STRING || n < 0 || n > max_n) {
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is not a string (or more than %d of them)",
                         path, name, max_n);
        goto out;
    }
    if (H5Tis_variable_str(t) > 0) {
        mt = k22_ph_vlstr_type();
        vl = calloc((size_t)n + 1, sizeof *vl);
        if (!vl || H5Aread(a, mt, vl) < 0) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
            goto out;
        }
        for (hssize_t i = 0; i < n; i++) {
            size_t len = vl[i] ? strnlen(vl[i], STR_CAP + 1) : 0;
            if (len > STR_CAP) {
                st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' longer than %zu bytes", path, name, STR_CAP);
                break;
            }
            out[i] = k22_xstrdup(vl[i] ? vl[i] : "");
            (*n_out)++;
        }
        H5Dvlen_reclaim(mt, s, H5P_DEFAULT, vl);
    } else {
        size_t sz = H5Tget_size(t);
        if (sz == 0 || sz > STR_CAP) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' has strings of %zu bytes", path, name, sz);
            goto out;
        }
        mt = H5Tcopy(t);
        fixed = calloc((size_t)n + 1, sz);
        if (!fixed || H5Aread(a, mt, fixed) < 0) {
            st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' cannot be read", path, name);
            goto out;
        }
        for (hssize_t i = 0; i < n; i++) {
            out[i] = k22_xcalloc(1, sz + 1);
            memcpy(out[i], fixed + (size_t)i * sz, sz);
            (*n_out)++;
        }
    }
out:
    if (st)
        for (int i = 0; i < *n_out; i++) free(out[i]);
    if (st) *n_out = 0;
    free(vl);
    free(fixed);
    if (mt >= 0) H5Tclose(mt);
    H5Tclose(t);
    H5Sclose(s);
    H5Aclose(a);
    return st;
}

/* A single string attribute into dst (truncated to n bytes is an error). */
k22_status k22_ph_attr_read_str(hid_t loc, const char *name, char *dst, size_t cap, const char *path,
                                k22_err *err)
{
    char *v[1] = {NULL};
    int n = 0;
    k22_status st = k22_ph_attr_read_strs(loc, name, 1, v, &n, path, err);
    if (st) return st;
    if (n != 1) st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' holds no string", path, name);
    else if (strlen(v[0]) >= cap)
        st = k22_err_set(err, K22_ERR_FORMAT, "%s: attribute '%s' is %zu bytes, at most %zu allowed", path,
                         name, strlen(v[0]), cap - 1);
    else snprintf(dst, cap, "%s", v[0]);
    for (int i = 0; i < n; i++) free(v[i]);
    return st;
}
