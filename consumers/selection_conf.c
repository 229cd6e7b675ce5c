/* selection_conf.c -- selection.* keys and control state <-> selector (selection_conf.h). */
#include "selection_conf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const she_conf_def_t she_selection_conf_defs[] = {
    {"selection.difficulty", SHE_CONF_BOOL, "true", "dynamic difficulty sampling", 0, 0, NULL,
     NULL},
    {"selection.band.min", SHE_CONF_DOUBLE, "0.01", "lowest the band's lower bound goes", 0, 1,
     NULL, NULL},
    {"selection.band.max", SHE_CONF_DOUBLE, "0.90", "highest the band's upper bound goes", 0, 1,
     NULL, NULL},
    {"selection.band.lo", SHE_CONF_DOUBLE, "0.05", "initial lower bound of the pass-rate band", 0,
     1, NULL, NULL},
    {"selection.band.hi", SHE_CONF_DOUBLE, "0.80", "initial upper bound of the pass-rate band", 0,
     1, NULL, NULL},
    {"selection.band.step", SHE_CONF_DOUBLE, "0.05", "how far one adjustment moves a bound",
     0.001, 1, NULL, NULL},
    {"selection.window", SHE_CONF_INT, "32", "difficulty decisions per band adjustment", 1,
     1000000, NULL, NULL},
    {"selection.min.admit", SHE_CONF_DOUBLE, "0.25", "admitted share below which the band widens",
     0, 1, NULL, NULL},
    {"selection.max.admit", SHE_CONF_DOUBLE, "0.75",
     "admitted share above which the band moves back", 0, 1, NULL, NULL},
    {"selection.p.unseen", SHE_CONF_DOUBLE, "1.0", "probability of admitting an unseen prompt", 0,
     1, NULL, NULL},
    {"selection.retry.after", SHE_CONF_INT, "8", "skips after which a prompt is measured anew",
     0, 1000000, NULL, NULL},
    {"selection.ema.alpha", SHE_CONF_DOUBLE, "0.5", "weight of the newest pass rate of a prompt",
     0.001, 1, NULL, NULL},
    {"selection.quota.slack", SHE_CONF_DOUBLE, "1.0", "diverse-sampling quota slack", 0.001, 1e9,
     NULL, NULL},
    {"selection.quota.window", SHE_CONF_INT, "1024", "offers a quota cell stays active", 1,
     100000000, NULL, NULL},
    {"selection.stages", SHE_CONF_STR, "all:0-1:none:0",
     "curriculum: NAME:LO-HI:BALANCE:MAX_STEPS[:PATIENCE:DELTA],... (BALANCE none or "
     "domain+type+grade)",
     0, 0, NULL, NULL},
    {"selection.quota.caps", SHE_CONF_STR, "",
     "largest share of admissions per query type, TYPE=SHARE,... (e.g. negation=0.2,qa=0.3); "
     "`she control` publishes them to every rollout consumer",
     0, 0, NULL, NULL},
    {"selection.stage.rate", SHE_CONF_ENUM, "recent",
     "pass rate a curriculum stage's band applies to: recent (streaming: the prompt's recent "
     "rate; a prompt never rolled out is measured first) or offline (unknown = outside)",
     0, 0, "recent|offline", NULL},
    {"selection.seed", SHE_CONF_INT, "1", "seed of the unseen-prompt draws", 0, 1e15, NULL, NULL},
    {NULL, 0, NULL, NULL, 0, 0, NULL, NULL},
};

she_conf_def_t *she_selection_defs_with(const she_conf_def_t *own) {
    size_t n_own = 0, n_sel = 0;
    while (own[n_own].name)
        n_own++;
    while (she_selection_conf_defs[n_sel].name)
        n_sel++;
    she_conf_def_t *defs = calloc(n_own + n_sel + 1, sizeof(*defs));
    SHE_CHECK_ALLOC(defs);
    memcpy(defs, own, n_own * sizeof(*defs));
    memcpy(defs + n_own, she_selection_conf_defs, n_sel * sizeof(*defs));
    return defs;
}

static she_err_t parse_balance(const char *s, size_t len, unsigned *out) {
    *out = 0;
    if (len == 4 && strncmp(s, "none", 4) == 0)
        return SHE_OK;
    while (len > 0) {
        const char *plus = memchr(s, '+', len);
        size_t n = plus ? (size_t)(plus - s) : len;
        if (n == 6 && strncmp(s, "domain", 6) == 0)
            *out |= SHE_SEL_DIM_DOMAIN;
        else if (n == 4 && strncmp(s, "type", 4) == 0)
            *out |= SHE_SEL_DIM_QUERY_TYPE;
        else if (n == 5 && strncmp(s, "grade", 5) == 0)
            *out |= SHE_SEL_DIM_GRADE;
        else
            return SHE_ERR_CONFIG;
        s += n + (plus != NULL);
        len -= n + (plus != NULL);
    }
    return SHE_OK;
}

/* One stage: NAME:LO-HI:BALANCE:MAX_STEPS[:PATIENCE:DELTA]. */
static she_err_t parse_stage(const char *spec, she_sel_stage_t *st, char *errstr,
                             size_t errstr_size) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *part[6] = {0};
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && n < 6;
         t = strtok_r(NULL, ":", &save))
        part[n++] = t;
    memset(st, 0, sizeof(*st));
    char *end;
    int ok = (n == 4 || n == 6) && strlen(part[0]) < SHE_SEL_STAGE_NAME;
    if (ok) {
        snprintf(st->name, sizeof(st->name), "%s", part[0]);
        st->offline_lo = strtof(part[1], &end);
        ok = *end == '-';
        if (ok) {
            st->offline_hi = strtof(end + 1, &end);
            ok = *end == '\0';
        }
    }
    ok = ok && parse_balance(part[2], strlen(part[2]), &st->balance) == SHE_OK;
    if (ok) {
        st->max_steps = strtoll(part[3], &end, 10);
        ok = *end == '\0';
    }
    if (ok && n == 6) {
        st->plateau_patience = (int)strtol(part[4], &end, 10);
        ok = *end == '\0';
        st->plateau_delta = ok ? strtof(part[5], &end) : 0;
        ok = ok && *end == '\0';
    }
    if (!ok)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                        "selection.stages: bad stage '%s' (NAME:LO-HI:BALANCE:MAX_STEPS"
                        "[:PATIENCE:DELTA])",
                        spec);
    return SHE_OK;
}

she_err_t she_selection_parse_caps(const char *spec, she_sel_cap_t *caps, int *n_caps,
                                   char *errstr, size_t errstr_size) {
    *n_caps = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ','), *eq = strchr(p, '=');
        if (!end)
            end = p + strlen(p);
        if (!eq || eq > end || eq == p || (size_t)(eq - p) >= SHE_SEL_CAP_NAME)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "selection.quota.caps: '%.*s' at byte %d is not TYPE=SHARE (type of "
                            "1..%d bytes)",
                            (int)(end - p), p, (int)(p - spec), SHE_SEL_CAP_NAME - 1);
        if (*n_caps == SHE_SEL_MAX_CAPS)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "selection.quota.caps: more than %d caps", SHE_SEL_MAX_CAPS);
        she_sel_cap_t *k = &caps[(*n_caps)++];
        memset(k, 0, sizeof(*k));
        memcpy(k->query_type, p, (size_t)(eq - p));
        char num[32] = {0}, *tail = NULL;
        size_t nlen = (size_t)(end - eq - 1);
        if (nlen > 0 && nlen < sizeof(num))
            memcpy(num, eq + 1, nlen);
        double v = strtod(num, &tail);
        if (nlen == 0 || nlen >= sizeof(num) || *tail || !(v > 0.0 && v <= 1.0))
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "selection.quota.caps: share of '%s' at byte %d must be in (0, 1]",
                            k->query_type, (int)(eq + 1 - spec));
        k->share = (float)v;
        p = *end ? end + 1 : end;
    }
    return SHE_OK;
}

she_err_t she_selection_config_from_conf(const she_conf_t *conf, she_selector_config_t *cfg,
                                         char *errstr, size_t errstr_size) {
    *cfg = she_selector_defaults();
    cfg->difficulty = she_conf_get_bool(conf, "selection.difficulty");
    cfg->lo_min = (float)she_conf_get_double(conf, "selection.band.min");
    cfg->hi_max = (float)she_conf_get_double(conf, "selection.band.max");
    cfg->lo0 = (float)she_conf_get_double(conf, "selection.band.lo");
    cfg->hi0 = (float)she_conf_get_double(conf, "selection.band.hi");
    cfg->step = (float)she_conf_get_double(conf, "selection.band.step");
    cfg->window = (int)she_conf_get_int(conf, "selection.window");
    cfg->min_admit = (float)she_conf_get_double(conf, "selection.min.admit");
    cfg->max_admit = (float)she_conf_get_double(conf, "selection.max.admit");
    cfg->p_unseen = (float)she_conf_get_double(conf, "selection.p.unseen");
    cfg->retry_after = (int)she_conf_get_int(conf, "selection.retry.after");
    cfg->ema_alpha = (float)she_conf_get_double(conf, "selection.ema.alpha");
    cfg->quota_slack = (float)she_conf_get_double(conf, "selection.quota.slack");
    cfg->quota_window = (int)she_conf_get_int(conf, "selection.quota.window");
    cfg->seed = (uint64_t)she_conf_get_int(conf, "selection.seed");
    cfg->stage_recent = strcmp(she_conf_get(conf, "selection.stage.rate"), "recent") == 0;
    SHE_TRY(she_selection_parse_caps(she_conf_get(conf, "selection.quota.caps"), cfg->caps,
                                     &cfg->n_caps, errstr, errstr_size));
    const char *stages = she_conf_get(conf, "selection.stages");
    char buf[2048];
    snprintf(buf, sizeof(buf), "%s", stages);
    cfg->n_stages = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (cfg->n_stages == SHE_SEL_MAX_STAGES)
            return she_errf(SHE_ERR_CONFIG, errstr, errstr_size,
                            "selection.stages: more than %d stages", SHE_SEL_MAX_STAGES);
        SHE_TRY(parse_stage(t, &cfg->stages[cfg->n_stages++], errstr, errstr_size));
    }
    if (cfg->n_stages == 0)
        return she_errf(SHE_ERR_CONFIG, errstr, errstr_size, "selection.stages: no stage");
    /* The selector checks the rest (band order, admit shares) when it is created. */
    she_selector_t *probe = she_selector_new(cfg, errstr, errstr_size);
    if (!probe)
        return SHE_ERR_CONFIG;
    she_selector_free(probe);
    return SHE_OK;
}

she_err_t she_selection_apply_control(she_selector_t *sel, const she_control_state_t *cs,
                                      char *errstr, size_t errstr_size) {
    if (!(cs->difficulty_lo >= 0.0f && cs->difficulty_lo <= cs->difficulty_hi &&
          cs->difficulty_hi <= 1.0f) ||
        cs->curriculum_stage < 0 || cs->n_quotas < 0 || cs->n_quotas > SHE_SEL_MAX_CAPS)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "control state %lld: band [%g, %g], stage %d or %d quotas (at most %d) "
                        "is not valid",
                        (long long)cs->seq, cs->difficulty_lo, cs->difficulty_hi,
                        (int)cs->curriculum_stage, cs->n_quotas, SHE_SEL_MAX_CAPS);
    she_sel_cap_t caps[SHE_SEL_MAX_CAPS];
    for (int i = 0; i < cs->n_quotas; i++) {
        const char *name = cs->quotas[i].name ? cs->quotas[i].name : "";
        memset(&caps[i], 0, sizeof(caps[i]));
        snprintf(caps[i].query_type, sizeof(caps[i].query_type), "%s", name);
        /* a name that does not fit is refused by the selector, not silently cut */
        caps[i].share = strlen(name) < SHE_SEL_CAP_NAME ? (float)cs->quotas[i].value : NAN;
    }
    /* The selector's public surface sets band and stage only through its JSON state; control
     * states are rare (a few per minute), so the round trip costs nothing that matters.  Caps
     * first, then the state, undoing the caps when the state does not fit: all or nothing. */
    she_selector_config_t before;
    she_selector_get_config(sel, &before);
    char why[SHE_ERRSTR_SIZE];
    if (she_selector_set_caps(sel, caps, cs->n_quotas, why, sizeof(why)) != SHE_OK)
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size, "control state %lld: quotas: %s",
                        (long long)cs->seq, why);
    json_t *state = she_selector_state_json(sel);
    SHE_CHECK_ALLOC(state);
    json_object_set_new(state, "lo", json_real(cs->difficulty_lo));
    json_object_set_new(state, "hi", json_real(cs->difficulty_hi));
    she_selector_status_t status;
    she_selector_status(sel, &status);
    if (status.stage != cs->curriculum_stage) {
        json_object_set_new(state, "stage", json_integer(cs->curriculum_stage));
        json_object_set_new(state, "stage_steps", json_integer(0));
    }
    she_err_t err = she_selector_load_state(sel, state, why, sizeof(why));
    json_decref(state);
    if (err != SHE_OK) {
        SHE_ASSERT(she_selector_set_caps(sel, before.caps, before.n_caps, why, sizeof(why)) ==
                   SHE_OK);
        return she_errf(SHE_ERR_INVALID, errstr, errstr_size,
                        "control state %lld does not fit this selector (stage %d of %s)",
                        (long long)cs->seq, (int)cs->curriculum_stage,
                        "the configured selection.stages");
    }
    return SHE_OK;
}
