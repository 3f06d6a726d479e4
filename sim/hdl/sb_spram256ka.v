// Behavioural model of the iCE40 UP5K's SB_SPRAM256KA (16K x 16 single-port RAM), for the
// simulation of the board top (hdl/onchip_ram.py, kind "spram"). A read (CHIPSELECT, !WREN)
// returns the word on DATAOUT after the clock edge; a write stores the nibbles MASKWREN enables.
// Standby, sleep and power-off are not modelled beyond disabling access.
//
// Simulation only.

module SB_SPRAM256KA (
    input  wire [13:0] ADDRESS,
    input  wire [15:0] DATAIN,
    input  wire [3:0]  MASKWREN,
    input  wire        WREN,
    input  wire        CHIPSELECT,
    input  wire        CLOCK,
    input  wire        STANDBY,
    input  wire        SLEEP,
    input  wire        POWEROFF,
    output reg  [15:0] DATAOUT
);
    reg [15:0] mem [0:16383];
    wire on = CHIPSELECT && !STANDBY && !SLEEP && POWEROFF;
    always @(posedge CLOCK) begin
        if (on && WREN) begin
            if (MASKWREN[0]) mem[ADDRESS][3:0]   <= DATAIN[3:0];
            if (MASKWREN[1]) mem[ADDRESS][7:4]   <= DATAIN[7:4];
            if (MASKWREN[2]) mem[ADDRESS][11:8]  <= DATAIN[11:8];
            if (MASKWREN[3]) mem[ADDRESS][15:12] <= DATAIN[15:12];
        end else if (on) begin
            DATAOUT <= mem[ADDRESS];
        end
    end
endmodule
