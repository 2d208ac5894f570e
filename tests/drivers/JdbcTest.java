// pgjdbc driver compatibility checks.
//
// Usage: java -cp /usr/share/java/postgresql.jar tests/drivers/JdbcTest.java HOST PORT
//
// Connects as root to defaultdb (no TLS, no password), prints "ok: ..." per
// passed check, exits 0 if all pass; otherwise prints one "FAIL: ..." line and
// exits 1.
import java.math.BigDecimal;
import java.sql.*;
import java.time.*;
import java.util.*;
import org.postgresql.util.PGInterval;

public class JdbcTest {
    static String stage = "connect";

    static final class CheckFailed extends Exception {
        CheckFailed(String m) { super(m); }
    }

    static void check(String name, Object expected, Object actual) throws CheckFailed {
        if (!Objects.deepEquals(expected, actual)) {
            throw new CheckFailed(name + ": expected " + show(expected) + ", got " + show(actual));
        }
        System.out.println("ok: " + name);
    }

    static String show(Object o) {
        return o instanceof byte[] b ? Arrays.toString(b) : o instanceof String ? "'" + o + "'" : String.valueOf(o);
    }

    static final String[] COLS = {"id", "b", "i2", "i4", "i8", "f4", "f8", "n", "vc", "c", "t", "by",
        "d", "ts", "tstz", "iv", "u", "j"};
    static final int[] NULL_TYPES = {Types.BIGINT, Types.BOOLEAN, Types.SMALLINT, Types.INTEGER, Types.BIGINT,
        Types.REAL, Types.DOUBLE, Types.NUMERIC, Types.VARCHAR, Types.CHAR, Types.VARCHAR, Types.BINARY,
        Types.DATE, Types.TIMESTAMP, Types.TIMESTAMP_WITH_TIMEZONE, Types.OTHER, Types.OTHER, Types.OTHER};

    public static void main(String[] args) {
        if (args.length != 2) { System.err.println("usage: JdbcTest HOST PORT"); System.exit(2); }
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1]
            + "/defaultdb?user=root&sslmode=disable&connectTimeout=10";
        try (Connection conn = DriverManager.getConnection(url); Connection conn2 = DriverManager.getConnection(url)) {
            run(conn, conn2);
        } catch (CheckFailed e) {
            System.out.println("FAIL: " + e.getMessage());
            System.exit(1);
        } catch (Exception e) {
            String msg = String.valueOf(e.getMessage()).replace("\n", " | ");
            System.out.println("FAIL: " + stage + ": unexpected " + e.getClass().getSimpleName() + ": " + msg);
            System.exit(1);
        }
        System.out.println("all jdbc checks passed");
    }

    static void run(Connection conn, Connection conn2) throws Exception {
        Statement st = conn.createStatement();
        // a. connect + version()
        stage = "SELECT version()";
        ResultSet rs = st.executeQuery("SELECT version()");
        rs.next();
        check("SELECT version() returns a string", true, rs.getString(1) != null && !rs.getString(1).isEmpty());

        // b. DDL
        stage = "DDL";
        st.execute("DROP TABLE IF EXISTS jdbc_types");
        st.execute("DROP TABLE IF EXISTS jdbc_serial");
        st.execute("CREATE TABLE jdbc_types (id INT8 PRIMARY KEY, b BOOL, i2 INT2, i4 INT4, i8 INT8, "
            + "f4 FLOAT4, f8 FLOAT8, n NUMERIC(12,4), vc VARCHAR(20), c CHAR(5), t TEXT, by BYTEA, d DATE, "
            + "ts TIMESTAMP, tstz TIMESTAMPTZ, iv INTERVAL, u UUID, j JSONB)");
        st.execute("CREATE TABLE jdbc_serial (id SERIAL PRIMARY KEY, name TEXT)");
        System.out.println("ok: CREATE TABLE jdbc_types, jdbc_serial");

        // c. parameters of every type, round trip
        stage = "typed insert/select round trip";
        String insert = "INSERT INTO jdbc_types (" + String.join(", ", COLS) + ") VALUES ("
            + String.join(", ", Collections.nCopies(COLS.length, "?")) + ")";
        String select = "SELECT " + String.join(", ", COLS) + " FROM jdbc_types WHERE id = ?";
        byte[] bytes = {0x00, 0x01, (byte) 0xfe, (byte) 0xff};
        LocalDate date = LocalDate.of(2024, 2, 29);
        LocalDateTime ts = LocalDateTime.of(2024, 1, 2, 3, 4, 5, 123456000);
        OffsetDateTime tstz = OffsetDateTime.of(2024, 1, 2, 3, 4, 5, 654321000, ZoneOffset.UTC);
        PGInterval iv = new PGInterval(0, 0, 3, 4, 0, 0.000005);
        UUID uuid = UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        String json = "{\"nested\":{\"k\":\"v\"},\"b\":[true,null,\"x\"],\"a\":1}";
        BigDecimal num = new BigDecimal("12345678.1234");
        try (PreparedStatement ps = conn.prepareStatement(insert)) {
            ps.setLong(1, 1); ps.setBoolean(2, true); ps.setShort(3, (short) -32768);
            ps.setInt(4, Integer.MAX_VALUE); ps.setLong(5, Long.MAX_VALUE); ps.setFloat(6, 1.5f);
            ps.setDouble(7, 2.25); ps.setBigDecimal(8, num); ps.setString(9, "hello varchar");
            ps.setString(10, "ab"); ps.setString(11, "text \u00e9\u4e2d"); ps.setBytes(12, bytes);
            ps.setObject(13, date); ps.setObject(14, ts); ps.setObject(15, tstz);
            // PGInterval via setObject/getObject would make pgjdbc look "interval" up in pg_type; send its text untyped
            ps.setObject(16, iv.getValue(), Types.OTHER);
            ps.setObject(17, uuid); ps.setObject(18, json, Types.OTHER);
            check("typed INSERT affects 1 row", 1, ps.executeUpdate());
            ps.setLong(1, 2);
            for (int i = 2; i <= COLS.length; i++) ps.setNull(i, NULL_TYPES[i - 1]);
            check("NULL INSERT affects 1 row", 1, ps.executeUpdate());
        }
        try (PreparedStatement ps = conn.prepareStatement(select)) {
            ps.setLong(1, 1);
            rs = ps.executeQuery();
            check("typed row found", true, rs.next());
            check("typed row column id", 1L, rs.getLong("id"));
            check("typed row column b", true, rs.getBoolean("b"));
            check("typed row column i2", (short) -32768, rs.getShort("i2"));
            check("typed row column i4", Integer.MAX_VALUE, rs.getInt("i4"));
            check("typed row column i8", Long.MAX_VALUE, rs.getLong("i8"));
            check("typed row column f4", 1.5f, rs.getFloat("f4"));
            check("typed row column f8", 2.25, rs.getDouble("f8"));
            check("typed row column n", num, rs.getBigDecimal("n"));
            check("typed row column vc", "hello varchar", rs.getString("vc"));
            check("typed row column c", "ab   ", rs.getString("c"));
            check("typed row column t", "text \u00e9\u4e2d", rs.getString("t"));
            check("typed row column by", bytes, rs.getBytes("by"));
            check("typed row column d", date, rs.getObject("d", LocalDate.class));
            check("typed row column ts", ts, rs.getObject("ts", LocalDateTime.class));
            check("typed row column tstz", tstz.toInstant(), rs.getObject("tstz", OffsetDateTime.class).toInstant());
            check("typed row column iv", iv, new PGInterval(rs.getString("iv")));
            check("typed row column u", uuid, rs.getObject("u"));
            check("typed row column j", Json.parse(json), Json.parse(rs.getString("j")));
            ps.setLong(1, 2);
            rs = ps.executeQuery();
            check("NULL row found", true, rs.next());
            List<Object> nulls = new ArrayList<>();
            for (int i = 2; i <= COLS.length; i++) nulls.add(rs.getObject(i));
            check("NULL row read back", Collections.nCopies(COLS.length - 1, null), nulls);
        }

        // d. prepared statement executed several times; WHERE with parameters
        stage = "prepared statement reuse / WHERE params";
        List<Long> ids = new ArrayList<>();
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_serial (name) VALUES (?) RETURNING id")) {
            // pgjdbc switches to a named server-side statement after prepareThreshold (5) uses
            for (String name : new String[] {"alpha", "beta", "gamma", "beta", "delta", "epsilon"}) {
                ps.setString(1, name);
                rs = ps.executeQuery();
                rs.next();
                ids.add(rs.getLong(1));
            }
        }
        check("SERIAL ids via RETURNING are 6 distinct", 6, new HashSet<>(ids).size());
        check("count(*) WHERE name = ?", 2L, count(conn, "beta"));
        Collections.sort(ids);
        try (PreparedStatement ps = conn.prepareStatement("SELECT id, name FROM jdbc_serial WHERE id > ? ORDER BY id LIMIT ?")) {
            ps.setLong(1, ids.get(0));
            ps.setInt(2, 2);
            rs = ps.executeQuery();
            List<String> got = new ArrayList<>();
            while (rs.next()) got.add(rs.getLong(1) + ":" + rs.getString(2));
            check("WHERE id > ? ORDER BY id LIMIT ?", List.of(ids.get(1) + ":beta", ids.get(2) + ":gamma"), got);
        }

        // e. transactions: commit visible from second connection, rollback not
        stage = "transactions";
        conn.setAutoCommit(false);
        insertName(conn, "committed");
        conn.commit();
        check("committed row visible from second connection", 1L, count(conn2, "committed"));
        insertName(conn, "rolled back");
        conn.rollback();
        conn.setAutoCommit(true);
        check("rolled-back row not visible", 0L, count(conn2, "rolled back"));

        // f. errors carry SQLSTATE; connection stays usable
        stage = "error SQLSTATEs";
        String[][] cases = {
            {"duplicate primary key", "INSERT INTO jdbc_types (id) VALUES (1)", "23505"},
            {"missing table", "SELECT * FROM jdbc_no_such_table", "42P01"},
            {"division by zero", "SELECT 1/0", "22012"},
            {"syntax error", "SELEC 1", "42601"}};
        for (String[] c : cases) {
            String actual = "no error";
            try (PreparedStatement ps = conn.prepareStatement(c[1])) {
                ps.execute();
            } catch (SQLException e) {
                actual = e.getSQLState();
            }
            check(c[0] + " -> SQLSTATE " + c[2], c[2], actual);
            rs = st.executeQuery("SELECT 1");
            rs.next();
            check("connection usable after " + c[0], 1, rs.getInt(1));
        }
    }

    static void insertName(Connection conn, String name) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("INSERT INTO jdbc_serial (name) VALUES (?)")) {
            ps.setString(1, name);
            ps.executeUpdate();
        }
    }

    static long count(Connection conn, String name) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM jdbc_serial WHERE name = ?")) {
            ps.setString(1, name);
            ResultSet rs = ps.executeQuery();
            rs.next();
            return rs.getLong(1);
        }
    }

    // Minimal JSON parser so JSONB can be compared as parsed values (objects become TreeMaps).
    static final class Json {
        final String s;
        int p;
        Json(String s) { this.s = s; }

        static Object parse(String s) {
            Json j = new Json(s);
            Object v = j.value();
            if (!s.substring(j.p).isBlank()) throw new IllegalArgumentException("bad JSON: " + s);
            return v;
        }

        boolean more(char close) { // skips whitespace and ','; consumes close and returns false at the end
            while (Character.isWhitespace(s.charAt(p)) || s.charAt(p) == ',') p++;
            if (s.charAt(p) != close) return true;
            p++;
            return false;
        }

        Object value() {
            while (Character.isWhitespace(s.charAt(p))) p++;
            char c = s.charAt(p);
            if (c == '{') {
                Map<String, Object> m = new TreeMap<>();
                for (p++; more('}'); ) { String k = (String) value(); p = s.indexOf(':', p) + 1; m.put(k, value()); }
                return m;
            }
            if (c == '[') {
                List<Object> l = new ArrayList<>();
                for (p++; more(']'); ) l.add(value());
                return l;
            }
            if (c == '"') {
                StringBuilder b = new StringBuilder();
                for (p++; s.charAt(p) != '"'; p++) {
                    char ch = s.charAt(p);
                    if (ch == '\\') {
                        ch = s.charAt(++p);
                        if (ch == 'u') { ch = (char) Integer.parseInt(s.substring(p + 1, p + 5), 16); p += 4; }
                        else ch = switch (ch) { case 'n' -> '\n'; case 't' -> '\t'; case 'r' -> '\r'; case 'b' -> '\b'; case 'f' -> '\f'; default -> ch; };
                    }
                    b.append(ch);
                }
                p++;
                return b.toString();
            }
            for (String lit : new String[] {"true", "false", "null"}) {
                if (s.startsWith(lit, p)) { p += lit.length(); return lit.equals("null") ? null : Boolean.valueOf(lit); }
            }
            int start = p;
            while (p < s.length() && "+-0123456789.eE".indexOf(s.charAt(p)) >= 0) p++;
            return new BigDecimal(s.substring(start, p)).stripTrailingZeros();
        }
    }
}
