-- The board on PostgreSQL: projects, the tasks planned in them, what they wait for, their
-- history and the tenants' queues; the same rows as SQLite's (host/src/store/sqlite.rs), every
-- integer a BIGINT, flags BOOLEAN, JSON as text.
--
-- Full-text search: SQLite keeps FTS5 indexes (unicode61 tokenizer); here each table has a
-- stored `search` tsvector ('simple' configuration, GIN-indexed) of text normalized the way
-- unicode61 tokenizes it, so that the same searches find the same rows on both stores. The
-- store's queries go through `board_search_query` (store/postgres/board.rs), which normalizes
-- their words with the same function.

-- unicode61's `remove_diacritics=1` folding (é → e, Å → a, ſ → s…), character for character as
-- SQLite 3.40 does it. Case is left to the 'simple' dictionary, which lowercases both sides.
CREATE FUNCTION board_search_fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT translate($1,
        'µÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſƠơƯưǍǎǏǐǑǒǓǔǦǧǨǩǪǫǰǴǵǸǹȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȮȯȲȳςϐϑϕϖϰϱϵḀḁḂḃḄḅḆḇḊḋḌḍḎḏḐḑḒḓḘḙḚḛḞḟḠḡḢḣḤḥḦḧḨḩḪḫḬḭḰḱḲḳḴḵḶḷḺḻḼḽḾḿṀṁṂṃṄṅṆṇṈṉṊṋṔṕṖṗṘṙṚṛṞṟṠṡṢṣṪṫṬṭṮṯṰṱṲṳṴṵṶṷṼṽṾṿẀẁẂẃẄẅẆẇẈẉẊẋẌẍẎẏẐẑẒẓẔẕẖẗẘẙẛẠạẢảẸẹẺẻẼẽỈỉỊịỌọỎỏỤụỦủỲỳỴỵỶỷỸỹιÅ',
        'μaaaaaaceeeeiiiinooooouuuuyaaaaaaceeeeiiiinooooouuuuyyaaaaaaccccccccddeeeeeeeeeegggggggghhiiiiiiiiijjkkllllllnnnnnnoooooorrrrrrssssssssttttuuuuuuuuuuuuwwyyyzzzzzzsoouuaaiioouuggkkoojggnnaaaaeeeeiiiioooorrrruuuusstthhaaeeooyyσβθφπκρεaabbbbbbddddddddddeeeeffgghhhhhhhhhhiikkkkkkllllllmmmmmmnnnnnnnnpppprrrrrrssssttttttttuuuuuuvvvvwwwwwwwwwwxxxxyyzzzzzzhtwysaaaaeeeeeeiiiioooouuuuyyyyyyyyιa') $$;

-- A field's text as unicode61 splits it: its punctuation, symbols and marks made spaces, so
-- the PostgreSQL parser sees only words (left alone, it keeps `auth-service`, `a.b` or
-- `1.5` whole and indexes hyphenated words three times, which FTS5 does not). The class is
-- unicode61's separators in the ranges people type, explicit so that it holds in any locale.
CREATE FUNCTION board_search_words(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT regexp_replace(board_search_fold(coalesce($1, '')),
        '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\xa9\xab-\xb1\xb4\xb6-\xb8\xbb\xbf\xd7\xf7\u0300-\u036f\u2000-\u2064\u206a-\u206f\u20a0-\u20cf\u2190-\u23ff\u2500-\u27bf\u2900-\u2bff\u3000-\u3004\u3008-\u3020\u3030\ufe00-\ufe0f\ufe30-\ufe4f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\U0001f300-\U0001faff]+', ' ', 'g') $$;

-- One field of a search vector, weighted to name it (title/name A, description B, tags C)
-- for `field:` searches. It ends with a lexeme no text has ('.', at the position after its
-- last word), so that the next field's words do not follow on: an FTS5 phrase never runs from
-- one column into the next. `board_search_vector` deletes it once the fields are joined.
CREATE FUNCTION board_search_field(text, "char") RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT setweight(to_tsvector('simple', board_search_words($1)), $2) || '.:1'::tsvector $$;

-- A row's search vector from its fields (each NULL when the table has fewer).
CREATE FUNCTION board_search_vector(text, text, text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ts_delete(board_search_field($1, 'A') || board_search_field($2, 'B')
                           || board_search_field($3, 'C'), '.') $$;

-- A task's tags as FTS5 indexes them: the JSON array's strings joined by spaces.
CREATE FUNCTION board_tags_text(text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT string_agg(value, ' ') FROM json_array_elements_text($1::json) $$;

-- The tsquery of a search the store wrote (see `board.rs`): its words normalized as the
-- indexed text is.
CREATE FUNCTION board_search_query(text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT to_tsquery('simple', board_search_fold($1)) $$;

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    settings TEXT NOT NULL,
    max_tasks BIGINT,
    max_concurrent_tasks BIGINT,
    storage_limit_bytes BIGINT,
    deleted_at BIGINT,
    search tsvector NOT NULL GENERATED ALWAYS AS (board_search_vector(name, description, NULL)) STORED
);
CREATE INDEX projects_by_tenant ON projects (tenant, created_at);
CREATE INDEX projects_search ON projects USING GIN (search);

CREATE TABLE board_tasks (
    id TEXT PRIMARY KEY,
    -- Insertion order, which SQLite's rowid gives: the dispatcher's tie-break.
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    tenant TEXT NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority BIGINT NOT NULL,
    progress BIGINT NOT NULL,
    estimated_duration_secs BIGINT,
    assigned_to TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    retry_attempt BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    deleted_at BIGINT,
    queue TEXT,
    queued_at BIGINT,
    run_id TEXT,
    retries_left BIGINT NOT NULL DEFAULT 0,
    timeout_secs BIGINT,
    backend TEXT,
    search tsvector NOT NULL
        GENERATED ALWAYS AS (board_search_vector(title, description, board_tags_text(tags))) STORED
);
CREATE INDEX board_tasks_queued ON board_tasks (status, queued_at) WHERE deleted_at IS NULL;
CREATE INDEX board_tasks_by_tenant ON board_tasks (tenant, created_at);
CREATE INDEX board_tasks_by_project ON board_tasks (project_id, status);
CREATE INDEX board_tasks_search ON board_tasks USING GIN (search);

CREATE TABLE board_task_dependencies (
    task_id TEXT NOT NULL REFERENCES board_tasks (id),
    depends_on TEXT NOT NULL REFERENCES board_tasks (id),
    PRIMARY KEY (task_id, depends_on)
);

CREATE TABLE board_task_history (
    id TEXT PRIMARY KEY,
    -- Insertion order (SQLite's rowid): entries of the same millisecond stay in order.
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    tenant TEXT NOT NULL,
    task_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    field TEXT,
    old_value TEXT,
    new_value TEXT,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    note TEXT
);
CREATE INDEX board_task_history_by_task ON board_task_history (task_id, at);
CREATE INDEX board_task_history_by_project ON board_task_history (project_id, at);

CREATE TABLE board_queues (
    tenant TEXT NOT NULL,
    queue TEXT NOT NULL,
    paused BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, queue)
);
